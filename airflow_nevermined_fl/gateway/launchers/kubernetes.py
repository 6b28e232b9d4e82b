"""Kubernetes backend: each workload is a pod in the provider's cluster (one Airflow ``kubernetes``
connection per provider: multi-cluster), the coordinator behind a Service.

API access goes through the cncf-kubernetes provider's ``KubernetesHook``. The workload's public files
travel in a ConfigMap, its secret environment and its secret files each in a Secret (never in the pod
spec); its NetworkPolicy (:mod:`.k8s_network`), created before the pod so that the pod never runs
unconfined, selects that pod only. These and the Service carry an owner reference to the pod, so
deleting the pod garbage-collects them. Teardown deletes by label (``stop_run``), which also catches
objects whose pod was never created. A pod that outlives a lost teardown is still bounded by
``activeDeadlineSeconds``.

Every API call carries ``_request_timeout`` (``extra.nvfl.request_timeout``, default 60 s); an API server
that cannot be reached or does not answer in time is a :class:`KubernetesUnreachableError` naming the
connection, its server and the call (the server's own answers stay ``ApiException``).
"""

from __future__ import annotations

import itertools
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.gateway.launchers import k8s_manifests as m
from airflow_nevermined_fl.gateway.launchers import k8s_network
from airflow_nevermined_fl.gateway.launchers.base import (
    Labels,
    Launcher,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
)
from airflow_nevermined_fl.gateway.launchers.k8s_config import KubernetesConfigError, ProviderConfig, parse

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api, NetworkingV1Api

FIRST_PORT = 50051  # a pod has its own network namespace: any port is free there
# Waiting reasons after which the container will not start without a change of spec.
FATAL_WAITING = ("InvalidImageName", "ErrImageNeverPull", "ImagePullBackOff", "CreateContainerConfigError")
KINDS = ("pod", "service", "config_map", "secret", "network_policy")
DELETE_WAIT = 60.0


def _not_found(err: Exception) -> bool:
    return getattr(err, "status", None) == 404


class KubernetesUnreachableError(RuntimeError):
    """The cluster's API server could not be reached or did not answer within the request timeout."""


_CALLS = ("read_", "list_", "create_", "patch_", "delete_", "replace_")


class _BoundedApi:
    """A ``CoreV1Api`` whose calls carry ``_request_timeout`` and whose transport failures (urllib3's, after
    its bounded retries) are :class:`KubernetesUnreachableError`; other attributes pass through."""

    def __init__(self, api: CoreV1Api, timeout: float, where: str) -> None:
        self._api, self._timeout, self._where = api, timeout, where

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not name.startswith(_CALLS) or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, TimeoutError

            kwargs.setdefault("_request_timeout", self._timeout)
            try:
                return attr(*args, **kwargs)
            except HTTPError as exc:
                reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
                timed_out = isinstance(reason, TimeoutError) and not isinstance(reason, NewConnectionError)
                what = f"no answer within {self._timeout:g} s" if timed_out else "unreachable"
                raise KubernetesUnreachableError(
                    f"{self._where}: {what} during {name}: {type(reason).__name__}"
                ) from None

        return call


class KubernetesLauncher(Launcher):
    backend = "kubernetes"
    bind_host = "0.0.0.0"

    def __init__(self, conn_id: str | None = None) -> None:
        if not conn_id:
            raise KubernetesConfigError(
                "backend_conn_id: the kubernetes backend needs a Kubernetes connection id (one per cluster)"
            )
        super().__init__(conn_id=conn_id)
        from airflow.exceptions import AirflowNotFoundException
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        self.hook = KubernetesHook(conn_id=conn_id)
        try:
            extras = self.hook.conn_extras
        except AirflowNotFoundException:
            raise KubernetesConfigError(f"backend_conn_id: connection {conn_id!r} is not defined") from None
        self.config: ProviderConfig = parse(conn_id, extras)
        self._ports = itertools.count(FIRST_PORT)
        self._final: dict[str, tuple[WorkloadStatus, str]] = {}  # what stop() saw before deleting

    @cached_property
    def api(self) -> CoreV1Api:
        """The core API client: each call bounded by ``request_timeout``, a lost server a clear error."""
        return self._bounded(self.hook.core_v1_client)

    @cached_property
    def networking(self) -> NetworkingV1Api:
        """The networking API client (the workloads' NetworkPolicies), bounded like :attr:`api`."""
        from kubernetes.client import NetworkingV1Api

        return self._bounded(NetworkingV1Api(self.hook.core_v1_client.api_client))

    def _bounded(self, api: Any) -> Any:
        host = getattr(getattr(api.api_client, "configuration", None), "host", None) or "?"
        where = f"kubernetes connection {self.conn_id!r} (API server {host})"
        return _BoundedApi(api, self.config.request_timeout, where)

    def _api(self, kind: str) -> Any:
        """The client serving objects of ``kind``."""
        return self.networking if kind == "network_policy" else self.api

    def free_port(self) -> int:
        return next(self._ports)

    # --- start -------------------------------------------------------------------------------------
    def start(self, spec: WorkloadSpec) -> Workload:
        m.check_spec(spec, self.config)
        name = m.object_name(spec.labels)
        existing = self._read("pod", name)
        if existing is not None:
            workload = self._workload(existing)
            if self.status(workload).running:
                return workload
            self._delete(m.workload_selector(name))
            self._wait_gone(name)
        try:
            self._create(spec, name)
        except BaseException:  # incl. the task being killed: nothing half-created stays behind
            self._delete(m.workload_selector(name))
            raise
        return self._workload(self._read("pod", name))

    def _create(self, spec: WorkloadSpec, name: str) -> None:
        """NetworkPolicy, ConfigMap and Secret, the pod, their owner references, then the Service and its
        address."""
        ns = self.config.namespace
        referred = (  # (kind, name, manifest, wanted) of what comes before the pod
            ("network_policy", name, k8s_network.network_policy, True),
            ("config_map", name, m.config_map, spec.files),
            ("secret", name, m.secret, spec.secret_env),
            ("secret", m.secret_files_name(spec.labels), m.secret_files, spec.secret_files),
        )
        objects = [
            (kind, object_name, manifest) for kind, object_name, manifest, wanted in referred if wanted
        ]
        for kind, _, manifest in objects:
            getattr(self._api(kind), f"create_namespaced_{kind}")(ns, manifest(spec, self.config))
        created = self.api.create_namespaced_pod(ns, m.pod(spec, self.config))
        owner = m.owner_reference(name, created.metadata.uid)
        patch = {"metadata": {"ownerReferences": [owner]}}
        for kind, object_name, _ in objects:
            getattr(self._api(kind), f"patch_namespaced_{kind}")(object_name, ns, patch)
        if spec.ports:
            self.api.create_namespaced_service(ns, m.service(spec, self.config, owner))
            self._wait_endpoints(name)

    def _node_host(self) -> str:
        """Where a NodePort is reached: the configured host, else a Ready node's external address."""
        if self.config.advertised_host:
            return self.config.advertised_host
        try:
            nodes = self.api.list_node().items
        except KubernetesUnreachableError:
            raise
        except Exception as err:
            raise KubernetesConfigError(
                f"kubernetes connection {self.conn_id!r}: extra.nvfl.advertised_host: required for a "
                f"NodePort service when nodes cannot be listed ({getattr(err, 'reason', err)})"
            ) from None
        for kind in ("ExternalIP", "InternalIP"):
            for node in nodes:
                ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
                address = next((a.address for a in node.status.addresses or [] if a.type == kind), None)
                if ready and address:
                    return address
        raise KubernetesConfigError(
            f"kubernetes connection {self.conn_id!r}: extra.nvfl.advertised_host: required for a NodePort "
            "service: no Ready node has an address"
        )

    def _endpoints(self, name: str) -> dict[str, str] | None:
        svc = self._read("service", name)
        if svc is None:
            return None
        data = self.api.api_client.sanitize_for_serialization(svc)
        node_host = self._node_host() if data["spec"].get("type") == "NodePort" else None
        return m.service_endpoints(data, node_host)

    def _wait_endpoints(self, name: str) -> dict[str, str]:
        """Until the Service has an address: at once, except a LoadBalancer's ingress."""
        deadline = time.monotonic() + self.config.load_balancer_timeout
        while (endpoints := self._endpoints(name)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"service {self.config.namespace}/{name}: no address within "
                    f"{self.config.load_balancer_timeout}s (extra.nvfl.load_balancer_timeout)"
                )
            time.sleep(2)
        return endpoints

    # --- read --------------------------------------------------------------------------------------
    def _read(self, kind: str, name: str) -> Any:
        try:
            return getattr(self.api, f"read_namespaced_{kind}")(name, self.config.namespace)
        except Exception as err:
            if _not_found(err):
                return None
            raise

    def _workload(self, pod: Any) -> Workload:
        meta = pod.metadata
        notes = meta.annotations or {}
        labels = Labels(
            dag_id=notes[m.A_DAG],
            run_id=notes[m.A_RUN],
            task_id=notes[m.A_TASK],
            role=meta.labels[m.L_ROLE],
            name=notes[m.A_NAME],
        )
        has_ports = bool(pod.spec.containers[0].ports)
        endpoints = (self._endpoints(meta.name) or {}) if has_ports else {}
        host = next(iter(endpoints.values())).rsplit(":", 1)[0] if endpoints else meta.name
        return Workload(
            backend=self.backend,
            id=f"{meta.namespace}/{meta.name}",
            labels=labels,
            host=host,
            started=meta.creation_timestamp.timestamp() if meta.creation_timestamp else time.time(),
            endpoints=endpoints,
            details={
                "conn_id": self.conn_id,
                "namespace": meta.namespace,
                "pod": meta.name,
                "service_type": self.config.service_type if has_ports else None,
                "image": pod.spec.containers[0].image,
                "log": f"kubectl -n {meta.namespace} logs {meta.name}",
            },
        )

    @staticmethod
    def _pod_status(pod: Any) -> WorkloadStatus:
        phase = pod.status.phase if pod.status else None
        states = (pod.status.container_statuses or []) if pod.status else []
        terminated = next((s.state.terminated for s in states if s.state and s.state.terminated), None)
        if phase in ("Succeeded", "Failed"):
            return WorkloadStatus(running=False, exit_code=terminated.exit_code if terminated else None)
        waiting = [s.state.waiting.reason for s in states if s.state and s.state.waiting]
        if any(reason in FATAL_WAITING for reason in waiting):
            return WorkloadStatus(running=False)
        return WorkloadStatus(running=True)

    def status(self, workload: Workload) -> WorkloadStatus:
        pod = self._read("pod", workload.details["pod"])
        if pod is None:
            final = self._final.get(workload.id)
            return WorkloadStatus(running=False, exit_code=final[0].exit_code if final else None)
        return self._pod_status(pod)

    def logs(self, workload: Workload, tail: int = 100) -> str:
        name = workload.details["pod"]
        try:
            response = self.api.read_namespaced_pod_log(
                name, self.config.namespace, container=m.CONTAINER, tail_lines=tail, _preload_content=False
            )
            return response.data.decode(errors="replace")  # raw: the client's str decoding gives b'...'
        except Exception as err:
            if workload.id in self._final:
                return "\n".join(self._final[workload.id][1].splitlines()[-tail:])
            if isinstance(err, KubernetesUnreachableError):
                raise
            pod = self._read("pod", name)
            if pod is None:
                return f"(pod {workload.id} is gone; its log went with it)"
            states = pod.status.container_statuses or []
            why = [f"{s.state.waiting.reason}: {s.state.waiting.message}" for s in states if s.state.waiting]
            return f"(no log yet: phase {pod.status.phase}; {'; '.join(why) or getattr(err, 'reason', err)})"

    def find(self, dag_id: str, run_id: str) -> list[Workload]:
        pods = self.api.list_namespaced_pod(
            self.config.namespace, label_selector=m.run_selector(dag_id, run_id)
        ).items
        ours = [
            p for p in pods if {m.A_DAG, m.A_RUN, m.A_TASK, m.A_NAME} <= set(p.metadata.annotations or {})
        ]
        found = [self._workload(p) for p in sorted(ours, key=lambda p: p.metadata.name)]
        return [w for w in found if w.labels.dag_id == dag_id and w.labels.run_id == run_id]

    # --- stop --------------------------------------------------------------------------------------
    def stop(self, workload: Workload) -> None:
        """Delete the pod and its service, config map, secrets and network policy; its final status and
        log tail stay readable through this launcher's ``status``/``logs`` (the teardown task logs them)."""
        pod = self._read("pod", workload.details["pod"])
        if pod is not None:
            self._final[workload.id] = (self._pod_status(pod), self.logs(workload, tail=500))
        self._delete(m.workload_selector(workload.details["pod"]))

    def stop_run(self, dag_id: str, run_id: str) -> list[Workload]:
        found = super().stop_run(dag_id, run_id)
        self._delete(m.run_selector(dag_id, run_id))  # what has no pod (a start that died half-way)
        return found

    def labelled(self, selector: str) -> dict[str, list[str]]:
        """Names of the pods, services, config maps, secrets and network policies matching ``selector``, by
        kind."""
        found = {}
        for kind in KINDS:
            listed = getattr(self._api(kind), f"list_namespaced_{kind}")(
                self.config.namespace, label_selector=selector
            )
            if listed.items:
                found[kind] = [obj.metadata.name for obj in listed.items]
        return found

    def run_objects(self, dag_id: str, run_id: str) -> dict[str, list[str]]:
        """Every object of the run still in the cluster (empty after a complete teardown)."""
        return self.labelled(m.run_selector(dag_id, run_id))

    def _delete(self, selector: str) -> None:
        for kind, names in self.labelled(selector).items():
            kwargs = {"grace_period_seconds": self.config.grace_period_seconds} if kind == "pod" else {}
            for name in names:
                try:
                    getattr(self._api(kind), f"delete_namespaced_{kind}")(
                        name, self.config.namespace, **kwargs
                    )
                except Exception as err:
                    if not _not_found(err):
                        raise

    def _wait_gone(self, name: str) -> None:
        deadline = time.monotonic() + DELETE_WAIT + self.config.grace_period_seconds
        while self._read("pod", name) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {self.config.namespace}/{name} still terminating")
            time.sleep(1)
