"""The whole session DAG with the providers' gateways running their workloads on a real Kubernetes cluster
(each gateway's own backend: ``backend.type: kubernetes`` and the cluster's connection in its config; the
data providers' shards uploaded to S3, as pods cannot see a gateway's files), and a mixed session (the
coordinator provider's gateway on the cluster, the data providers' gateways running local processes):
success, no object of the run left in the cluster, no secret in logs / XCom / rendered fields, and no
cluster connection on the consumer's side.

Skips (visible with ``-ra``) unless ``NVFL_TEST_KUBECONFIG`` names a cluster; see docs/kubernetes.md and
``tests/kubernetes/test_k8s_cluster.py`` for the knobs (``NVFL_TEST_K8S_HOST_IP``: this machine's address
as the pods see it; the sessions' S3 binds there). The cluster must hold the runtime image the workflow
DDOs name (``airflow-nevermined-fl-runtime:<package version>``)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import real_cluster
from dagstack import Stack, assert_no_secrets, dataset_locations, payments, stopped

CONN_ID = "nvfl_k8s_dag"  # the test's own view of the cluster (to check it is clean), never the consumer's
NAMES = ("coordinator", "provider-1", "provider-2", "provider-3")
K8S, LOCAL = "-k8s", "-k8s-local"

pytestmark = real_cluster.REQUIRED


def _connection() -> dict[str, Any]:
    """The providers' cluster connection (NodePort: the gateways poll the coordinator's status from here)."""
    return {"conn_type": "kubernetes", "extra": real_cluster.connection_extra()}


@pytest.fixture(scope="module")
def k8s_stack(stack: Stack) -> Iterator[Stack]:
    """The DAG stack with its storage on a SeaweedFS the pods reach: the consumer's storage connection and
    the storage of the gateways started on it (workflow DDOs, datasets, the sessions' weights)."""
    from airflow_nevermined_fl.devtools.devstack import airflow, gateways

    with real_cluster.seaweed(stack.home / "s3-k8s") as s3_state:
        conn_env = airflow.connection_env({"chain": stack.chain, "s3": s3_state})
        k8s = dataclasses.replace(stack, s3=s3_state, conn_env=conn_env, extra_gateways={})
        try:
            yield k8s
        finally:
            for state in k8s.extra_gateways.values():
                gateways.down(state)


@pytest.fixture(scope="module")
def k8s_gateways(k8s_stack: Stack) -> dict[str, dict[str, Any]]:
    """The four providers' gateways with the cluster as their backend."""
    return k8s_stack.start_gateways("kubernetes", K8S, _connection())


@pytest.fixture(scope="module")
def local_gateways(k8s_stack: Stack) -> dict[str, dict[str, Any]]:
    """The same providers' gateways running local processes, on the same storage (for the mixed session)."""
    return k8s_stack.start_gateways("local", LOCAL)


def _executions(stack: Stack, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per provider, its gateway's execution record of the run (the provider's side: what it launched)."""
    records = {}
    for p in payments(summary):
        path = stack.home / "gateways" / p["name"] / "state" / "executions"
        records[p["name"]] = json.loads((path / f"{p['agreement']['agreement_id']}.json").read_text())
    return records


def _assert_cluster_clean(records: dict[str, dict[str, Any]], timeout: float = 120.0) -> None:
    """No object of the gateways' runs left (deleted pods may take their grace period to disappear)."""
    from airflow_nevermined_fl.gateway.launchers.kubernetes import KubernetesLauncher

    workloads = [r["workload"] for r in records.values() if r["workload"]["backend"] == "kubernetes"]
    runs = [(w["labels"]["dag_id"], w["labels"]["run_id"]) for w in workloads]
    assert runs
    with pytest.MonkeyPatch.context() as patch:  # this process only: the consumer's runs never see it
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(_connection()))
        launcher = KubernetesLauncher(CONN_ID)
        deadline = time.monotonic() + timeout
        while (left := {r: o for r in runs if (o := launcher.run_objects(*r))}) and (
            time.monotonic() < deadline
        ):
            time.sleep(2)
    assert left == {}, left


def _assert_consumer_side_clean(stack: Stack, summary: dict[str, Any], output: str) -> None:
    consumer_side = [output, json.dumps(summary["xcom"]), json.dumps(summary["rendered"])]
    assert_no_secrets(stack, *consumer_side)
    for location in dataset_locations(stack):
        assert not any(location in text for text in consumer_side), location
    environment = stack.airflow_env()
    assert not [k for k, v in environment.items() if k.startswith("AIRFLOW_CONN_") and "kubernetes" in v]


def test_session_dag_on_kubernetes(k8s_stack: Stack, k8s_gateways: dict[str, Any], tmp_path: Path) -> None:
    conf = k8s_stack.conf(**k8s_stack.providers(k8s_gateways))
    summary, output = k8s_stack.dag_test(conf, tmp_path / "summary.json")
    assert summary["state"] == "success", summary["tasks"]
    rounds = summary["xcom"]["wait_for_rounds"]["return_value"]
    assert rounds["rounds"] == 2 and rounds["final_accuracy"] > 0.5
    assert stopped(summary) == {n + K8S for n in NAMES}
    records = _executions(k8s_stack, summary)
    assert {r["workload"]["backend"] for r in records.values()} == {"kubernetes"}
    assert all(r["workload"]["details"]["pod"].startswith("nvfl-") for r in records.values())
    assert all(r["state"] == "finished" and r["settlement"]["settled"] for r in records.values())
    _assert_cluster_clean(records)
    _assert_consumer_side_clean(k8s_stack, summary, output)


def test_mixed_session_dag_coordinator_in_cluster(
    k8s_stack: Stack,
    k8s_gateways: dict[str, Any],
    local_gateways: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The coordinator provider runs on the cluster, the data providers local processes (each gateway's
    choice): the local participants reach the coordinator at its published NodePort."""
    conf = k8s_stack.conf(**k8s_stack.providers(local_gateways))
    conf["coordinator"] = {"did": k8s_gateways["coordinator" + K8S]["did"]}
    summary, output = k8s_stack.dag_test(conf, tmp_path / "summary.json")
    assert summary["state"] == "success", summary["tasks"]
    assert stopped(summary) == {"coordinator" + K8S, *(n + LOCAL for n in NAMES[1:])}
    records = _executions(k8s_stack, summary)
    backends = {name: r["workload"]["backend"] for name, r in records.items()}
    assert backends == {"coordinator" + K8S: "kubernetes"} | {n + LOCAL: "local" for n in NAMES[1:]}
    _assert_cluster_clean(records)
    _assert_consumer_side_clean(k8s_stack, summary, output)
