"""The whole session DAG with the providers' gateways running their workloads in Docker containers
(each gateway's own backend), a mixed session (coordinator provider on Docker, data providers as local
processes) and a coordinator container killed mid-session: after each, no container of the run remains.
Skips without a reachable Docker engine (CI always has one)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagstack import SUMMARY_PREFIX, Stack, assert_no_secrets, payments, stopped
from docker_engine import engine_or_skip

from airflow_nevermined_fl.devtools import images
from airflow_nevermined_fl.gateway.launchers.docker import LABEL

NAMES = ("coordinator", "provider-1", "provider-2", "provider-3")
SUFFIX = "-docker"


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The engine at $DOCKER_HOST with the runtime image built (cached); checked before the (expensive)
    stack is asked for."""
    client = engine_or_skip()
    images.build_all(client)
    yield client


@pytest.fixture(scope="module")
def docker_gateways(engine: Any, stack: Stack) -> dict[str, dict[str, Any]]:
    """Four more gateways, same provider accounts, whose backend is the Docker engine."""
    return stack.start_gateways("docker", SUFFIX)


def _labelled(engine: Any, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers of the run's agreements (a gateway labels its workloads with the agreement id)."""
    agreements = [p["agreement"]["agreement_id"] for p in payments(summary)]
    return [
        c for a in agreements for c in engine.containers(all=True, filters={"label": [f"{LABEL}.run_id={a}"]})
    ]


def test_session_dag_all_in_containers(
    engine: Any, stack: Stack, docker_gateways: dict[str, Any], tmp_path: Path
) -> None:
    summary, output = stack.dag_test(
        stack.conf(**stack.providers(docker_gateways)), tmp_path / "summary.json"
    )
    assert summary["state"] == "success", summary["tasks"]
    assert set(summary["tasks"].values()) == {"success"}
    rounds = summary["xcom"]["wait_for_rounds"]["return_value"]
    assert rounds["rounds"] == 2 and rounds["final_accuracy"] > 0.5
    assert stopped(summary) == {n + SUFFIX for n in NAMES}
    assert _labelled(engine, summary) == []
    assert summary["xcom"]["teardown"]["return_value"]["refunds"] == {}  # every provider was paid
    # The teardown logs each workload's last lines, which its gateway kept when it removed the container
    # (the lines streamed live into the wait's log are those labelled with the workload's name).
    finished = [line for line in output.splitlines() if "event='Session finished'" in line]
    assert "event='Stop requested'" in output
    assert len([line for line in finished if not re.search(r"\[[\w-]+\] ", line)]) == 3
    assert any(f"[provider-1{SUFFIX}] " in line for line in output.splitlines())  # streamed live
    assert_no_secrets(stack, output, json.dumps(summary["xcom"]), json.dumps(summary["rendered"]))


def test_mixed_session_dag(
    engine: Any, stack: Stack, docker_gateways: dict[str, Any], tmp_path: Path
) -> None:
    """The coordinator provider runs Docker, the data providers local processes: each gateway's choice."""
    conf = stack.conf(coordinator={"did": docker_gateways["coordinator" + SUFFIX]["did"]})
    summary, _ = stack.dag_test(conf, tmp_path / "summary.json")
    assert summary["state"] == "success", summary["tasks"]
    assert stopped(summary) == {"coordinator" + SUFFIX, *NAMES[1:]}
    assert _labelled(engine, summary) == []


def test_coordinator_container_killed_mid_session(
    engine: Any, stack: Stack, docker_gateways: dict[str, Any], tmp_path: Path
) -> None:
    """Injected failure: the run fails fast, every gateway removes its container of the run, and the
    teardown refunds every payment once the agreements' time-out (from ``session_timeout``) passed."""
    conf = stack.conf(session_timeout=60, **stack.providers(docker_gateways))
    proc = stack.start_dag_test(conf, tmp_path / "summary.json")
    participants = {"label": [f"{LABEL}.role=participant"]}
    coordinator = None
    deadline = time.monotonic() + 300
    while coordinator is None and time.monotonic() < deadline and proc.poll() is None:
        if len(engine.containers(filters=participants)) == 3:
            coordinator = engine.containers(filters={"label": [f"{LABEL}.role=coordinator"]})[0]
        time.sleep(0.2)
    assert coordinator is not None, "the participants' containers never ran"
    engine.kill(coordinator["Id"])
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and SUMMARY_PREFIX in output, output[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["state"] == "failed"
    assert summary["tasks"]["wait_for_rounds"] == "failed"
    assert summary["tasks"]["teardown"] == "success"
    assert "coordinator process exited with code 137" in output
    assert stopped(summary) == {n + SUFFIX for n in NAMES}
    assert _labelled(engine, summary) == []
    refunds = summary["xcom"]["teardown"]["return_value"]["refunds"]
    assert {r["outcome"] for r in refunds.values()} == {"refunded"} and len(refunds) == len(NAMES)
