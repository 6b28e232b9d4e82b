"""A data provider's participant is killed mid-session (on its provider's side) while at least
``min_participants`` remain: the session degrades instead of failing. The model is published, the providers
that did their work are paid, the dropped one is not, and the teardown refunds its escrow by itself once
its agreement's time-out passed on the chain: every balance reconciles, nothing is stranded or paid twice."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from dagstack import Stack, child_pids, gateway_workloads, payments, process_gone

from airflow_nevermined_fl.gateway.launchers import Workload

DROPPED = "provider-3"


def _participant(stack: Stack, started_after: float, timeout: float) -> Workload:
    """The dropped provider's participant workload of this run, once its process runs."""
    deadline = time.monotonic() + timeout
    pattern = f"{DROPPED}/state/workloads/*/participant-*/workload.json"
    while time.monotonic() < deadline:
        for record in (stack.home / "gateways").glob(pattern):
            workload = Workload.from_dict(json.loads(record.read_text()))
            if workload.started >= started_after and workload.details.get("pid"):
                return workload
        time.sleep(0.2)
    raise TimeoutError(f"no participant of {DROPPED} within {timeout}s")


def test_participant_dropped_session_degrades_and_its_escrow_is_refunded(
    stack: Stack, tmp_path: Path
) -> None:
    conf = stack.conf(rounds=40, min_participants=2, heartbeat=0.5, stall_timeout=60, session_timeout=120)
    before = stack.balances()
    started = time.time()
    proc = stack.start_dag_test(conf, tmp_path / "summary.json")
    try:
        workload = _participant(stack, started, timeout=120)
        time.sleep(3)  # a few rounds with all three
        (python,) = child_pids(int(workload.details["pid"]))  # the participant under its exit-code shell
        os.kill(python, signal.SIGKILL)
        killed = time.time()
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    settled_after = time.time() - killed
    (tmp_path / "output.log").write_text(output)
    summary: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())

    assert summary["state"] == "success", summary["tasks"]
    model = summary["xcom"]["publish_model"]["return_value"]
    assert model["unpaid"] == [DROPPED] and DROPPED not in model["released"]
    assert [m["participants"] for m in model["rounds_metrics"]][-1] == 2  # went on with the two left
    teardown = summary["xcom"]["teardown"]["return_value"]
    assert set(teardown["refunds"]) == {DROPPED}
    assert teardown["refunds"][DROPPED]["outcome"] == "refunded" and teardown["refunds"][DROPPED]["tx_hash"]

    paid = {p["name"]: p for p in payments(summary)}
    after = stack.balances()
    prices = {name: paid[name]["price"] for name in paid}
    assert after[DROPPED] == before[DROPPED]  # not paid for work it did not finish
    for name in ("coordinator", "provider-1", "provider-2"):
        assert after[name] - before[name] == prices[name]  # paid once, for its work
    spent = sum(prices[n] for n in ("coordinator", "provider-1", "provider-2"))
    assert before["consumer"] - after["consumer"] == spent  # the dropped one's escrow came back
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in paid.values()})
    assert all(process_gone(int(w.details["pid"])) for _, w in workloads)
    print(f"fault to refund and reconciled balances: {settled_after:.1f}s")
