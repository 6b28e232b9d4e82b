"""Real FL sessions on a real Kubernetes cluster (kind, k3s, any): coordinator pod + Service and two
participant pods fetching their shards from S3, rounds to FINISHED, then teardown leaves no object of the
run (each pod had its NetworkPolicy while it ran); the same with the participants outside the cluster
(local processes reaching the published NodePort / LoadBalancer URL); and a failed start (image that cannot
be pulled) torn down without orphans.

Runs only when ``NVFL_TEST_KUBECONFIG`` names a kubeconfig; otherwise skips with the reason (``-ra``).
No cluster can run on the development machine. See docs/kubernetes.md for kind / k3s.

Environment:
  NVFL_TEST_KUBECONFIG      kubeconfig of the cluster (required)
  NVFL_TEST_K8S_HOST_IP     this machine's address as the pods see it; the test's SeaweedFS binds there
                            (kind: the docker network gateway, e.g. 172.18.0.1; k3s: the node address)
  NVFL_TEST_K8S_IMAGE       runtime image present in the cluster
                            (default airflow-nevermined-fl-runtime:<package version>)
  NVFL_TEST_K8S_NAMESPACE   namespace (default "default"); NVFL_TEST_K8S_CONTEXT: kubeconfig context
  NVFL_TEST_K8S_SERVICE_TYPE  NodePort (default: the test reaches the status port at node:nodePort)
                            or LoadBalancer (a cluster with a load balancer, e.g. k3s ServiceLB)
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import real_cluster

from airflow_nevermined_fl import __version__, ddo
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.gateway.launchers import Labels, Launcher, WorkloadSpec, get_launcher
from airflow_nevermined_fl.gateway.launchers.kubernetes import KubernetesLauncher

IMAGE = os.environ.get("NVFL_TEST_K8S_IMAGE") or f"{ddo.RUNTIME_IMAGE}:{__version__}"

pytestmark = real_cluster.REQUIRED


@pytest.fixture(scope="module")
def cluster_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The devstack SeaweedFS, bound to the address the pods reach (instead of 127.0.0.1)."""
    with real_cluster.seaweed(tmp_path_factory.mktemp("seaweed-k8s")) as state:
        yield state


@pytest.fixture
def launcher(k8s_conn: Callable[..., str]) -> KubernetesLauncher:
    extras = real_cluster.connection_extra(
        image_pull_policy="IfNotPresent",
        resources={"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        active_deadline_seconds=1800,
        load_balancer_timeout=180,
    )
    launcher = get_launcher("kubernetes", k8s_conn("nvfl_k8s_cluster", **extras))
    assert isinstance(launcher, KubernetesLauncher)
    return launcher


def _labels(run_id: str, role: str, name: str) -> Labels:
    return Labels(
        dag_id="nvfl_k8s_cluster_test", run_id=run_id, task_id=f"start_{role}", role=role, name=name
    )  # type: ignore[arg-type]


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"{what} not within {timeout}s")


@pytest.fixture(scope="module")
def s3_shards(cluster_s3: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two IID digits shards uploaded to the S3 the pods reach: datasets the participants fetch."""
    from airflow_nevermined_fl.devtools.devstack import s3

    client = s3.client(cluster_s3)
    manifest = data.partition(tmp_path_factory.mktemp("k8s-shards"), 2, "iid", 0.5, 0.2, 0)
    urls = []
    for i, shard in enumerate(manifest["providers"]):
        client.upload_file(shard["path"], cluster_s3["bucket"], f"k8s-test/data/provider-{i}.npz")
        urls.append(f"s3://{cluster_s3['bucket']}/k8s-test/data/provider-{i}.npz")
    return urls


def _session(
    coordinator: Launcher, participants: Launcher, cluster_s3: dict[str, Any], shards: list[str]
) -> Any:
    from airflow_nevermined_fl.devtools.bare import BareSession

    run_id = f"k8s-{uuid.uuid4().hex[:8]}"
    return BareSession.on_devstack_s3(
        cluster_s3,
        f"k8s-test/{run_id}",
        coordinator_launcher=coordinator,
        participant_launcher=participants,
        shards=shards,
        run_id=run_id,
        model={"name": "softmax", "num_features": 64, "num_classes": 10},
        rounds=2,
        heartbeat=1.0,
        dag_id="nvfl_k8s_cluster_test",
        image=IMAGE,
    )


def _run_to_finished(session: Any, launcher: KubernetesLauncher) -> dict[str, Any]:
    """Coordinator up (pull + schedule may take minutes), participants, FINISHED; then teardown."""
    try:
        coordinator = session.start_coordinator()
        assert coordinator.endpoints.keys() == {"grpc", "status"}
        session.wait_healthy(coordinator, timeout=300)
        participants = session.start_participants(coordinator)
        running = launcher.run_objects(session.dag_id, session.run_id)
        assert sorted(running["network_policy"]) == sorted(running["pod"])  # each pod confined as it runs
        status = session.wait_ended(coordinator, timeout=600)
        found = launcher.find(session.dag_id, session.run_id)
        assert coordinator.id in [w.id for w in found]
        logs = {w.labels.name: session.participant_launcher.logs(w, 50) for w in participants}
        logs["coordinator"] = launcher.logs(coordinator, 50)
    finally:
        session.stop_all()
    assert status["state"] == "FINISHED", status
    assert len(status["rounds_metrics"]) == 2 and status["model"]["url"].startswith("s3://")
    assert all(text.strip() for text in logs.values()), logs  # pod logs reachable
    _wait(lambda: not launcher.run_objects(session.dag_id, session.run_id), 120, "no object of the run left")
    return status


def test_session_on_cluster(
    launcher: KubernetesLauncher, cluster_s3: dict[str, Any], s3_shards: list[str]
) -> None:
    """Coordinator pod + Service and two participant pods in the cluster."""
    _run_to_finished(_session(launcher, launcher, cluster_s3, s3_shards), launcher)


def test_mixed_session_participants_outside_the_cluster(
    launcher: KubernetesLauncher, cluster_s3: dict[str, Any], s3_shards: list[str]
) -> None:
    """The coordinator's published URL (NodePort / LoadBalancer) serves participants of another
    "cluster": local processes on this machine."""
    from airflow_nevermined_fl import runtime_env

    runtime_env.install()
    local = get_launcher("local")
    session = _session(launcher, local, cluster_s3, s3_shards)
    _run_to_finished(session, launcher)
    assert not any(local.status(w).running for w in local.find(session.dag_id, session.run_id))


def test_failed_start_leaves_no_orphans(launcher: KubernetesLauncher) -> None:
    """An image that cannot be pulled: the workload reports not running; teardown removes everything."""
    run_id = f"k8s-fail-{uuid.uuid4().hex[:8]}"
    labels = _labels(run_id, "participant", "provider-x")
    spec = WorkloadSpec(
        labels=labels,
        module=ddo.PARTICIPANT_MODULE,
        args=["--coordinator", "127.0.0.1:1", "--data", "{dataset}"],
        dataset="s3://none/x.npz",
        secret_env={"AWS_SECRET_ACCESS_KEY": "not-a-real-key"},
        image="nvfl.invalid/no-such-image:0",
    )
    workload = launcher.start(spec)
    _wait(lambda: not launcher.status(workload).running, 300, "image pull failure reported")
    assert "ImagePull" in launcher.logs(workload) or "ErrImage" in launcher.logs(workload)
    launcher.stop_run(labels.dag_id, run_id)
    _wait(lambda: not launcher.run_objects(labels.dag_id, run_id), 120, "no object of the run left")
