"""Data providers' participants killed mid-session (on their providers' side). While at least
``min_participants`` remain, the session degrades instead of failing: the model is published, the providers
that did their work are paid, the dropped one is not, and the teardown refunds its escrow by itself once
its agreement's time-out passed on the chain. Below ``min_participants`` the session fails within its
stall time and every payment is refunded. Every balance reconciles, nothing is stranded or paid twice."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from dagstack import (
    Stack,
    assert_failed_and_refunded,
    gateway_workloads,
    payments,
    process_gone,
    run_with_fault,
    runtime_pid,
    seconds_to,
)

from airflow_nevermined_fl.gateway.launchers import Workload

DROPPED = "provider-3"


def _participant(stack: Stack, name: str, started_after: float, timeout: float) -> Workload:
    """Provider ``name``'s participant workload of this run, once its process runs."""
    deadline = time.monotonic() + timeout
    pattern = f"{name}/state/workloads/*/participant-*/workload.json"
    while time.monotonic() < deadline:
        for record in (stack.home / "gateways").glob(pattern):
            workload = Workload.from_dict(json.loads(record.read_text()))
            if workload.started >= started_after and workload.details.get("pid"):
                return workload
        time.sleep(0.2)
    raise TimeoutError(f"no participant of {name} within {timeout}s")


def _kill(stack: Stack, names: tuple[str, ...], started_after: float) -> float:
    """SIGKILL these providers' participants a few rounds into the run; when (epoch seconds)."""
    workloads = [_participant(stack, name, started_after, timeout=120) for name in names]
    time.sleep(3)  # a few rounds with all three
    for workload in workloads:
        python = runtime_pid(int(workload.details["pid"]))
        os.kill(python, signal.SIGKILL)
    return time.time()


def test_participant_dropped_session_degrades_and_its_escrow_is_refunded(
    stack: Stack, tmp_path: Path
) -> None:
    conf = stack.conf(rounds=40, min_participants=2, heartbeat=0.5, stall_timeout=60, session_timeout=120)
    before = stack.balances()
    summary, _, killed = run_with_fault(
        stack, conf, tmp_path, lambda started: _kill(stack, (DROPPED,), started)
    )
    settled_after = time.time() - killed

    assert summary["state"] == "success", summary["tasks"]
    model = summary["xcom"]["publish_model"]["return_value"]
    assert model["unpaid"] == [DROPPED] and DROPPED not in model["released"]
    assert [m["participants"] for m in model["rounds_metrics"]][-1] == 2  # went on with the two left
    teardown = summary["xcom"]["teardown"]["return_value"]
    assert set(teardown["refunds"]) == {DROPPED}
    assert teardown["refunds"][DROPPED]["outcome"] == "refunded" and teardown["refunds"][DROPPED]["tx_hash"]

    paid = {p["name"]: p for p in payments(summary)}
    after = stack.balances()
    prices = {name: stack.base(paid[name]["price"]) for name in paid}
    assert after[DROPPED] == before[DROPPED]  # not paid for work it did not finish
    for name in ("coordinator", "provider-1", "provider-2"):
        assert after[name] - before[name] == prices[name]  # paid once, for its work
    spent = sum(prices[n] for n in ("coordinator", "provider-1", "provider-2"))
    assert before["consumer"] - after["consumer"] == spent  # the dropped one's escrow came back
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in paid.values()})
    assert all(process_gone(int(w.details["pid"])) for _, w in workloads)
    print(f"fault to refund and reconciled balances: {settled_after:.1f}s")


def test_participants_dropped_below_min_the_session_fails_and_everything_is_refunded(
    stack: Stack, tmp_path: Path
) -> None:
    conf = stack.conf(rounds=500, min_participants=2, heartbeat=0.5, stall_timeout=10, session_timeout=40)
    before = stack.balances()
    summary, output, killed = run_with_fault(
        stack, conf, tmp_path, lambda started: _kill(stack, ("provider-2", "provider-3"), started)
    )
    refunded_after = time.time() - killed
    detected_after = seconds_to(output, "no progress for 10s", killed)
    assert detected_after < conf["stall_timeout"] + 10
    assert_failed_and_refunded(stack, summary, before)
    print(f"fault to detection {detected_after:.1f}s, to every refund {refunded_after:.1f}s")
