"""The whole session DAG with ``backend: kubernetes`` on a real cluster, and a mixed session (coordinator
pod, participants local): success, every workload torn down, no object of the run left in the cluster,
no secret in logs / XCom / rendered fields. Skips (visible with ``-ra``) unless ``NVFL_TEST_KUBECONFIG``
names a cluster; see README "## Kubernetes" and ``tests/kubernetes/test_k8s_cluster.py`` for the knobs
(``NVFL_TEST_K8S_HOST_IP``: this machine's address as the pods see it; the session's S3 binds there)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import real_cluster
from dagstack import Stack, assert_no_secrets

CONN_ID = "nvfl_k8s_dag"
NAMES = ("coordinator", "provider-1", "provider-2", "provider-3")

pytestmark = real_cluster.REQUIRED


@pytest.fixture(scope="module")
def k8s_stack(stack: Stack) -> Iterator[Stack]:
    """The DAG stack with its storage on a SeaweedFS the pods reach, the shards uploaded there, and the
    providers' Kubernetes connection (NodePort: the triggerer here polls the coordinator's status)."""
    from airflow_nevermined_fl.devstack import airflow, s3

    key = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    with real_cluster.seaweed(stack.home / "s3-k8s") as s3_state:
        os.environ[key] = json.dumps({"conn_type": "kubernetes", "extra": real_cluster.connection_extra()})
        try:
            client = s3.client(s3_state)
            for i, shard in enumerate(stack.manifest["providers"]):
                client.upload_file(shard["path"], s3_state["bucket"], f"data/provider-{i + 1}.npz")
            conn_env = airflow.connection_env({"chain": stack.chain, "s3": s3_state})
            yield dataclasses.replace(stack, s3=s3_state, conn_env=conn_env)
        finally:
            os.environ.pop(key, None)


def _k8s_conf(stack: Stack, participants: bool = True) -> dict[str, Any]:
    conf = stack.conf()
    conf["coordinator"].update(backend="kubernetes", backend_conn_id=CONN_ID)
    for i, entry in enumerate(conf["data_providers"], start=1):
        entry["dataset"] = f"s3://{stack.s3['bucket']}/data/provider-{i}.npz"
        if participants:
            entry.update(backend="kubernetes", backend_conn_id=CONN_ID)
    return conf


def _assert_cluster_clean(run_id: str, timeout: float = 120.0) -> None:
    """No object of the run left (deleted pods may take their grace period to disappear)."""
    from airflow_nevermined_fl.launchers.kubernetes import KubernetesLauncher

    launcher = KubernetesLauncher(CONN_ID)
    deadline = time.monotonic() + timeout
    while (left := launcher.run_objects("fl_session", run_id)) and time.monotonic() < deadline:
        time.sleep(2)
    assert left == {}, left


def _stopped(summary: dict[str, Any]) -> dict[str, str]:
    return {w["name"]: w["backend"] for w in summary["xcom"]["teardown"]["return_value"]["stopped"]}


def test_session_dag_on_kubernetes(k8s_stack: Stack, tmp_path: Path) -> None:
    summary, output = k8s_stack.dag_test(_k8s_conf(k8s_stack), tmp_path / "summary.json")
    assert summary["state"] == "success", summary["tasks"]
    rounds = summary["xcom"]["wait_for_rounds"]["return_value"]
    assert rounds["rounds"] == 2 and rounds["final_accuracy"] > 0.5
    started = summary["xcom"]["start_coordinator"]["return_value"]["workload"]
    assert started["backend"] == "kubernetes" and started["details"]["pod"].startswith("nvfl-")
    assert _stopped(summary) == dict.fromkeys(NAMES, "kubernetes")
    _assert_cluster_clean(summary["run_id"])
    assert_no_secrets(k8s_stack, output, json.dumps(summary["xcom"]), json.dumps(summary["rendered"]))


def test_mixed_session_dag_coordinator_in_cluster(k8s_stack: Stack, tmp_path: Path) -> None:
    summary, _ = k8s_stack.dag_test(_k8s_conf(k8s_stack, participants=False), tmp_path / "summary.json")
    assert summary["state"] == "success", summary["tasks"]
    assert _stopped(summary) == {"coordinator": "kubernetes"} | dict.fromkeys(NAMES[1:], "local")
    _assert_cluster_clean(summary["run_id"])
