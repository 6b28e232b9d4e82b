"""The coordinator is killed mid-session (on its provider's side): the run fails within the stall time,
no provider is paid, the teardown's ``stop`` on every gateway leaves no process behind, and the teardown
itself refunds every payment once the agreements' time-out (derived from ``session_timeout``) has passed
on the chain, which mines a block a second: the consumer's balance comes back with no one acting."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from dagstack import Stack, child_pids, coordinator_at_round, gateway_workloads, payments, process_gone


def test_coordinator_killed_mid_session(stack: Stack, tmp_path: Path) -> None:
    conf = stack.conf(rounds=500, stall_timeout=60, session_timeout=60)
    before = stack.balances()
    started = time.time()
    proc = stack.start_dag_test(conf, tmp_path / "summary.json")
    try:
        coordinator = coordinator_at_round(stack, started, 1, timeout=300)
        (python,) = child_pids(coordinator.details["pid"])  # the coordinator under its exit-code shell
        os.kill(python, signal.SIGKILL)
        killed = time.time()
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    refunded_after = time.time() - killed
    (tmp_path / "output.log").write_text(output)  # the run's task logs, for a failure's diagnosis
    summary: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())

    assert summary["state"] == "failed"
    assert summary["tasks"]["wait_for_rounds"] == "failed"
    assert summary["tasks"]["publish_model"] == "upstream_failed"
    assert summary["asset_events"] == []  # a failed session announces no model
    assert summary["tasks"]["teardown"] == "success"
    detected = next(line for line in output.splitlines() if "exited with code 137 during the session" in line)
    failed_after = datetime.fromisoformat(detected.split()[0]).timestamp() - killed
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
    # The teardown waited (deferred) for the agreements' time-out, then refunded every payment itself.
    assert set(teardown["refunds"]) == {p["name"] for p in paid}
    assert all(r["outcome"] == "refunded" and r["tx_hash"] for r in teardown["refunds"].values())
    assert "waiting" in output and "refunds of" in output
    assert stack.balances() == before  # nothing stranded, nobody paid
    print(f"fault to detection {failed_after:.1f}s, fault to every refund {refunded_after:.1f}s")
