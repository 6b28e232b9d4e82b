"""The coordinator is killed mid-session (on its provider's side): the run fails within the stall time,
no provider is paid, the teardown's ``stop`` on every gateway leaves no process behind, and the teardown
itself refunds every payment once the agreements' time-out (derived from ``session_timeout``) has passed
on the chain, which mines a block a second: the consumer's balance comes back with no one acting."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from dagstack import (
    Stack,
    assert_failed_and_refunded,
    coordinator_at_round,
    gateway_workloads,
    payments,
    run_with_fault,
    runtime_pid,
    seconds_to,
)


def test_coordinator_killed_mid_session(stack: Stack, tmp_path: Path) -> None:
    conf = stack.conf(rounds=500, stall_timeout=60, session_timeout=60)
    before = stack.balances()

    def kill(started: float) -> float:
        coordinator = coordinator_at_round(stack, started, 1, timeout=300)
        python = runtime_pid(coordinator.details["pid"])
        os.kill(python, signal.SIGKILL)
        return time.time()

    summary, output, killed = run_with_fault(stack, conf, tmp_path, kill)
    refunded_after = time.time() - killed

    failed_after = seconds_to(output, "exited with code 137 during the session", killed)
    assert failed_after < conf["stall_timeout"]
    assert summary["asset_events"] == []  # a failed session announces no model
    # Teardown: every gateway stopped its workload of the run, no process left, nobody paid; it waited
    # (deferred) for the agreements' time-out, then refunded every payment itself.
    assert_failed_and_refunded(stack, summary, before)
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in payments(summary)})
    assert {w.labels.name for _, w in workloads} == {"coordinator", "provider-1", "provider-2", "provider-3"}
    assert not any(launcher.status(w).running for launcher, w in workloads)
    teardown = summary["xcom"]["teardown"]["return_value"]
    assert {w["state"] for w in teardown["stopped"]} <= {"failed", "stopped"}
    assert "waiting" in output and "refunds of" in output
    print(f"fault to detection {failed_after:.1f}s, fault to every refund {refunded_after:.1f}s")
