"""The coordinator is killed mid-session (on its provider's side): the run fails within the stall time,
no provider is paid, the teardown's ``stop`` on every gateway leaves no process behind, and the consumer
can be refunded once the agreements' time-out has passed."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagstack import Stack, gateway_workloads, payments, process_gone

from airflow_nevermined_fl.gateway.launchers import Workload


def _coordinator_at_round(stack: Stack, started_after: float, round_: int, timeout: float) -> Workload:
    """The coordinator workload started after ``started_after`` once its status reports ``round_``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in (stack.home / "gateways").glob(
            "coordinator/state/workloads/*/coordinator-*/workload.json"
        ):
            workload = Workload.from_dict(json.loads(record.read_text()))
            if workload.started < started_after:
                continue
            try:
                status = httpx.get(f"http://{workload.endpoints['status']}/status", timeout=1).json()
            except httpx.HTTPError:
                continue
            if status["round"] >= round_:
                return workload
        time.sleep(0.3)
    raise TimeoutError(f"no coordinator reached round {round_} within {timeout}s")


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_coordinator_killed_mid_session(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = stack.conf(rounds=500, stall_timeout=60, refund_after_blocks=1000)
    before = stack.balances()
    started = time.time()
    proc = stack.start_dag_test(conf, tmp_path / "summary.json")
    try:
        coordinator = _coordinator_at_round(stack, started, 1, timeout=300)
        (python,) = _children(coordinator.details["pid"])  # the coordinator under its exit-code shell
        os.kill(python, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    failed_after = time.monotonic() - killed
    summary: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())

    assert summary["state"] == "failed"
    assert summary["tasks"]["wait_for_rounds"] == "failed"
    assert summary["tasks"]["publish_model"] == "upstream_failed"
    assert summary["tasks"]["teardown"] == "success"
    assert "coordinator process exited with code 137 during the session" in output
    assert failed_after < conf["stall_timeout"]

    # Teardown: every gateway stopped its workload of the run, no process left, nobody paid.
    paid = payments(summary)
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in paid})
    assert {w.labels.name for _, w in workloads} == {"coordinator", "provider-1", "provider-2", "provider-3"}
    assert not any(launcher.status(w).running for launcher, w in workloads)
    assert all(process_gone(int(w.details["pid"])) for _, w in workloads)
    teardown = summary["xcom"]["teardown"]["return_value"]
    assert teardown["session_completed"] is False
    assert {w["state"] for w in teardown["stopped"]} <= {"failed", "stopped"}
    assert all("has not timed out" in r["error"] for r in teardown["refunds"].values())  # not yet: time-out
    after = stack.balances()
    assert before["consumer"] - after["consumer"] == 25
    assert all(
        after[name] == before[name] for name in ("coordinator", "provider-1", "provider-2", "provider-3")
    )

    # Refund: after the agreements' time-out (blocks), the consumer gets every locked payment back.
    stack.w3().provider.make_request("anvil_mine", [hex(conf["refund_after_blocks"] + 1)])
    for key, value in stack.conn_env.items():
        monkeypatch.setenv(key, value)
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

    consumer = NeverminedHook("nevermined_consumer")
    for payment in paid:
        assert consumer.refund(payment["agreement"]) is not None
        assert consumer.condition_states(payment["agreement"])["compute"] == "aborted"
    assert stack.balances() == before
