"""The whole session DAG with workloads in Docker containers (``backend: docker``), a mixed session
(coordinator in a container, participants local) and a coordinator killed mid-session: after each, no
container carrying the run's labels remains. Skips without a reachable Docker engine."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagstack import SUMMARY_PREFIX, Stack, assert_no_secrets
from docker_engine import engine_or_skip, engine_url

from airflow_nevermined_fl import images
from airflow_nevermined_fl.launchers.docker import LABEL, connection_json

CONN_ID = "nvfl_docker_dag"
NAMES = ("coordinator", "provider-1", "provider-2", "provider-3")


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The engine at $DOCKER_HOST with the runtime image built (cached), and the providers' Docker
    connection (data dir mounted read-only at the same path) in the environment of the runs. Checks the
    engine before asking for the (expensive) stack."""
    client = engine_or_skip()
    images.build_all(client)
    stack: Stack = request.getfixturevalue("stack")
    data_dir = str(Path(stack.manifest["providers"][0]["path"]).parent)
    url = engine_url()
    key = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    os.environ[key] = connection_json(docker_url=url, mounts=[f"{data_dir}:{data_dir}:ro"])
    yield client
    os.environ.pop(key, None)


def _docker_conf(stack: Stack, coordinator: bool = True, participants: bool = True) -> dict[str, Any]:
    conf = stack.conf()
    entries = [conf["coordinator"]] if coordinator else []
    entries += conf["data_providers"] if participants else []
    for entry in entries:
        entry.update(backend="docker", backend_conn_id=CONN_ID)
    return conf


def _labelled(engine: Any, run_id: str) -> list[dict[str, Any]]:
    return engine.containers(all=True, filters={"label": [f"{LABEL}.run_id={run_id}"]})


def _stopped(summary: dict[str, Any]) -> dict[str, str]:
    teardown = summary["xcom"]["teardown"]["return_value"]
    return {w["name"]: w["backend"] for w in teardown["stopped"]}


def test_session_dag_all_in_containers(engine: Any, stack: Stack, tmp_path: Path) -> None:
    summary, output = stack.dag_test(_docker_conf(stack), tmp_path / "summary.json")
    assert summary["state"] == "success", summary["tasks"]
    assert set(summary["tasks"].values()) == {"success"}
    rounds = summary["xcom"]["wait_for_rounds"]["return_value"]
    assert rounds["rounds"] == 2 and rounds["final_accuracy"] > 0.5
    started = summary["xcom"]["start_coordinator"]["return_value"]["workload"]
    assert started["backend"] == "docker" and started["details"]["container"].startswith("nvfl-")
    assert _stopped(summary) == dict.fromkeys(NAMES, "docker")
    assert _labelled(engine, summary["run_id"]) == []
    assert_no_secrets(stack, output, json.dumps(summary["xcom"]), json.dumps(summary["rendered"]))


def test_mixed_session_dag(engine: Any, stack: Stack, tmp_path: Path) -> None:
    """Coordinator in a container, participants as local processes."""
    summary, _ = stack.dag_test(_docker_conf(stack, participants=False), tmp_path / "summary.json")
    assert summary["state"] == "success", summary["tasks"]
    assert _stopped(summary) == {
        "coordinator": "docker",
        "provider-1": "local",
        "provider-2": "local",
        "provider-3": "local",
    }
    assert _labelled(engine, summary["run_id"]) == []


def test_coordinator_container_killed_mid_session(engine: Any, stack: Stack, tmp_path: Path) -> None:
    """Injected failure: the run fails fast, teardown removes every container of the run, refunds apply."""
    proc = stack.start_dag_test(_docker_conf(stack), tmp_path / "summary.json")
    participants = {"label": [f"{LABEL}.dag_id=fl_session", f"{LABEL}.role=participant"]}
    coordinator = None
    deadline = time.monotonic() + 300
    while coordinator is None and time.monotonic() < deadline and proc.poll() is None:
        running = engine.containers(filters=participants)
        if len(running) == 3:
            run_id = running[0]["Labels"][f"{LABEL}.run_id"]
            coordinator = engine.containers(
                filters={"label": [f"{LABEL}.run_id={run_id}", f"{LABEL}.role=coordinator"]}
            )[0]
        time.sleep(0.2)
    assert coordinator is not None, "the participants' containers never ran"
    engine.kill(coordinator["Id"])
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and SUMMARY_PREFIX in output, output[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run_id"] == run_id
    assert summary["state"] == "failed"
    assert summary["tasks"]["wait_for_rounds"] == "failed"
    assert summary["tasks"]["teardown"] == "success"
    assert "coordinator process exited with code 137" in output
    assert set(_stopped(summary)) == set(NAMES)
    assert _labelled(engine, run_id) == []
