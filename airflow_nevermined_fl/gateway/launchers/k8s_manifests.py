"""Kubernetes manifests (plain API dicts) of one workload: pod, service, config map, secrets (its secret
environment; its secret files).

Pure functions of the workload spec and the provider config: no API calls, so every manifest can be
validated against the Kubernetes OpenAPI schema without a cluster. Every object carries the labels of
the run (dag id, run key, task id, role, name, workload) and the exact ids as annotations.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from airflow_nevermined_fl.gateway.launchers.base import Labels, Limits, WorkloadSpec, run_key
from airflow_nevermined_fl.gateway.launchers.k8s_config import KubernetesConfigError, ProviderConfig

CONTAINER = "base"  # the cncf-kubernetes provider's name for the workload container
WORKDIR = "/nvfl/work"
HEALTH_PORT = "status"  # a workload exposing this port answers GET /health there over TLS (readiness)
MANAGED_BY = "airflow-nevermined-fl"

L_DAG, L_RUN, L_TASK, L_NAME, L_WORKLOAD = (
    "nvfl/dag-id",
    "nvfl/run-key",
    "nvfl/task-id",
    "nvfl/name",
    "nvfl/workload",
)
L_ROLE, L_MANAGED = "app.kubernetes.io/component", "app.kubernetes.io/managed-by"
A_DAG, A_RUN, A_TASK, A_NAME = "nvfl/dag-id", "nvfl/run-id", "nvfl/task-id", "nvfl/name"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE_NAME = re.compile(r"^[-._a-zA-Z0-9]+$")


def label_value(value: str) -> str:
    """``value`` in label-value syntax (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")


def object_name(labels: Labels) -> str:
    """Name of the workload's pod (and service, config map, secret): a DNS-1035 label; the digest of
    dag id, run id, role and full name keeps it unique where the readable part is truncated."""
    ids = f"{labels.dag_id}/{labels.run_id}/{labels.role}/{labels.name}"
    return f"nvfl-{hashlib.sha256(ids.encode()).hexdigest()[:12]}-{labels.workload_key()}"[:63].rstrip("-")


def run_selector(dag_id: str, run_id: str) -> str:
    return f"{L_MANAGED}={MANAGED_BY},{L_RUN}={run_key(dag_id, run_id)}"


def workload_selector(name: str) -> str:
    return f"{L_MANAGED}={MANAGED_BY},{L_WORKLOAD}={name}"


def metadata(labels: Labels, namespace: str) -> dict[str, Any]:
    return {
        "name": object_name(labels),
        "namespace": namespace,
        "labels": {
            L_MANAGED: MANAGED_BY,
            L_ROLE: labels.role,
            L_DAG: label_value(labels.dag_id),
            L_RUN: labels.run_key(),
            L_TASK: label_value(labels.task_id),
            L_NAME: label_value(labels.name),
            L_WORKLOAD: object_name(labels),
        },
        "annotations": {
            A_DAG: labels.dag_id,
            A_RUN: labels.run_id,
            A_TASK: labels.task_id,
            A_NAME: labels.name,
        },
    }


def owner_reference(pod_name: str, pod_uid: str) -> dict[str, Any]:
    """Makes the service, config map and secret garbage-collected with their pod."""
    return {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}


def check_spec(spec: WorkloadSpec, config: ProviderConfig) -> None:
    """Refuse a spec this backend cannot run, naming the field, before anything is created."""
    if not spec.image:
        raise KubernetesConfigError("WorkloadSpec.image: the kubernetes backend needs the container image")
    for name in [*spec.env, *spec.secret_env]:
        if not _ENV_NAME.match(name):
            raise KubernetesConfigError(
                f"WorkloadSpec.env: {name!r} is not a valid environment variable name"
            )
    for kind, names, taken in (("files", spec.files, {}), ("secret_files", spec.secret_files, spec.files)):
        for name in names:
            if not _FILE_NAME.match(name) or name in taken:
                raise KubernetesConfigError(
                    f"WorkloadSpec.{kind}: {name!r} is not a plain file name of its own"
                )
    for name, port in spec.ports.items():
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 15 or not 0 < port < 65536:
            raise KubernetesConfigError(f"WorkloadSpec.ports: {name!r}: {port} is not a valid named port")
    data = spec.local_dataset
    if data:
        mount = config.dataset_mount_path
        if mount is None:
            raise KubernetesConfigError(
                f"kubernetes connection {config.conn_id!r}: extra.nvfl.dataset_volume: required for the "
                f"local dataset path {data!r} (or give the dataset as an s3:// URL)"
            )
        if not data.startswith(mount.rstrip("/") + "/"):
            raise KubernetesConfigError(
                f"dataset: {data!r} is not under the dataset volume mounted at {mount!r} "
                f"(kubernetes connection {config.conn_id!r})"
            )


def secret_files_name(labels: Labels) -> str:
    """Name of the Secret holding a workload's secret files (apart from its secret environment)."""
    return f"{object_name(labels)[:57].rstrip('-')}-files"


def _volumes(spec: WorkloadSpec, name: str, config: ProviderConfig) -> tuple[list[dict], list[dict]]:
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "work", "mountPath": WORKDIR}]
    sources = (
        ("files", spec.files, {"configMap": {"name": name}}),
        ("secret-files", spec.secret_files, {"secret": {"secretName": secret_files_name(spec.labels)}}),
    )
    for volume_name, files, source in sources:
        if files:
            volumes.append({"name": volume_name, **source})
            mounts += [
                {"name": volume_name, "mountPath": f"{WORKDIR}/{f}", "subPath": f, "readOnly": True}
                for f in files
            ]
    volume = config.dataset_volume
    if volume and spec.local_dataset:
        source = (
            {"hostPath": {"path": volume["host_path"], "type": "Directory"}}
            if "host_path" in volume
            else {"persistentVolumeClaim": {"claimName": volume["pvc"], "readOnly": True}}
        )
        volumes.append({"name": "dataset", **source})
        mounts.append({"name": "dataset", "mountPath": config.dataset_mount_path, "readOnly": True})
    return volumes, mounts


def pod(spec: WorkloadSpec, config: ProviderConfig) -> dict[str, Any]:
    """The workload's pod: restartPolicy Never (a crash is an exit code), bounded by
    ``activeDeadlineSeconds`` (the connection's, at most the spec's wall time) so that it cannot outlive a
    lost teardown for ever; its resources the connection's, else the spec's limits (:func:`resources`)."""
    meta = metadata(spec.labels, config.namespace)
    name = meta["name"]
    volumes, mounts = _volumes(spec, name, config)
    deadline = config.active_deadline_seconds
    if spec.limits:
        deadline = min(deadline, math.ceil(spec.limits.wall_time))
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": ["python", "-u", "-m", spec.module],
        "args": spec.argv(WORKDIR),
        "workingDir": WORKDIR,
        "env": [{"name": k, "value": v} for k, v in {"PYTHONUNBUFFERED": "1", **spec.env}.items()],
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in spec.ports.items()],
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if spec.secret_env:
        container["envFrom"] = [{"secretRef": {"name": name}}]
    if config.resources or spec.limits:
        container["resources"] = config.resources or resources(spec.limits)
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    if HEALTH_PORT in spec.ports:
        container["readinessProbe"] = {
            "httpGet": {"path": "/health", "port": HEALTH_PORT, "scheme": "HTTPS"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,
        "terminationGracePeriodSeconds": config.grace_period_seconds,
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in config.image_pull_secrets]
    if config.node_selector:
        pod_spec["nodeSelector"] = config.node_selector
    if config.tolerations:
        pod_spec["tolerations"] = config.tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def resources(limits: Limits) -> dict[str, dict[str, str]]:
    """A container's requests and limits from a spec's limits (the policy's): the CPU and memory it may
    use, a tenth of them requested (processes: the kubelet's ``podPidsLimit``, not a pod field)."""
    cpu, memory = f"{math.ceil(limits.cpus * 1000)}m", f"{limits.memory_mb}Mi"
    request_cpu, request_memory = f"{math.ceil(limits.cpus * 100)}m", f"{math.ceil(limits.memory_mb / 10)}Mi"
    return {
        "requests": {"cpu": request_cpu, "memory": request_memory},
        "limits": {"cpu": cpu, "memory": memory},
    }


def service(
    spec: WorkloadSpec, config: ProviderConfig, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Service in front of a workload with ports (the coordinator); type from the provider config."""
    meta = metadata(spec.labels, config.namespace)
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": config.service_type,
            "selector": {L_MANAGED: MANAGED_BY, L_WORKLOAD: meta["name"]},
            "ports": [
                {"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in spec.ports.items()
            ],
        },
    }


def config_map(spec: WorkloadSpec, config: ProviderConfig) -> dict[str, Any]:
    """The workload's public files (mounted into its work directory)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec.labels, config.namespace),
        "data": dict(spec.files),
    }


def secret(spec: WorkloadSpec, config: ProviderConfig) -> dict[str, Any]:
    """The workload's secret environment: referenced by the pod, never written into its spec."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(spec.labels, config.namespace),
        "stringData": dict(spec.secret_env),
    }


def secret_files(spec: WorkloadSpec, config: ProviderConfig) -> dict[str, Any]:
    """The workload's secret files (mounted into its work directory): a Secret of their own, so that none
    becomes an environment variable of the pod (it takes the other Secret whole)."""
    meta = metadata(spec.labels, config.namespace)
    meta["name"] = secret_files_name(spec.labels)
    return {**secret(spec, config), "metadata": meta, "stringData": dict(spec.secret_files)}


def service_endpoints(svc: dict[str, Any], node_host: str | None) -> dict[str, str] | None:
    """``{port name: host:port}`` where the service is reachable, or None until it has an address.

    ClusterIP: the cluster DNS name (participants in the same cluster); NodePort: ``node_host`` and the
    node port; LoadBalancer: the load balancer's ingress address once assigned.
    """
    meta, spec = svc["metadata"], svc["spec"]
    ports = spec.get("ports") or []
    if spec.get("type") == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        host = next(
            (i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")), None
        )
        return {p["name"]: f"{host}:{p['port']}" for p in ports} if host else None
    if spec.get("type") == "NodePort":
        if not node_host or not all(p.get("nodePort") for p in ports):
            return None
        return {p["name"]: f"{node_host}:{p['nodePort']}" for p in ports}
    host = f"{meta['name']}.{meta['namespace']}.svc"
    return {p["name"]: f"{host}:{p['port']}" for p in ports}
