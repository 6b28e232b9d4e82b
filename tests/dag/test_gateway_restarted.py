"""Provider gateways restarted mid-session (the coordinator's and a data provider's): their workloads keep
running, each gateway takes its executions up again from its records (no second workload), the consumer's
waits ride out the gap, and the session completes with every provider paid exactly once."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dagstack import Stack, coordinator_at_round, gateway_workloads, payments, process_gone

RESTARTED = ("coordinator", "provider-2")


def test_gateways_restarted_mid_session_the_session_completes(stack: Stack, tmp_path: Path) -> None:
    conf = stack.conf(rounds=30, heartbeat=0.5, stall_timeout=60, session_timeout=300)
    before = stack.balances()
    started = time.time()
    proc = stack.start_dag_test(conf, tmp_path / "summary.json")
    try:
        coordinator_at_round(stack, started, 1, timeout=300)
        restart_started = time.monotonic()
        for name in RESTARTED:
            stack.restart_gateway(name)
        restarted_in = time.monotonic() - restart_started
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    (tmp_path / "output.log").write_text(output)
    summary: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())

    assert summary["state"] == "success", summary["tasks"]
    assert summary["xcom"]["wait_for_rounds"]["return_value"]["rounds"] == conf["rounds"]
    paid = payments(summary)
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in paid})
    per_agreement = Counter(w.labels.run_id for _, w in workloads)
    assert sorted(per_agreement.values()) == [1] * len(paid)  # no second workload after a restart
    assert all(process_gone(int(w.details["pid"])) for _, w in workloads)

    after = stack.balances()
    for payment in paid:  # each provider paid once, by its own (restarted or not) gateway
        assert after[payment["name"]] - before[payment["name"]] == stack.base(payment["price"])
    assert before["consumer"] - after["consumer"] == sum(stack.base(p["price"]) for p in paid)
    print(f"gateways {', '.join(RESTARTED)} restarted in {restarted_in:.1f}s; the session completed")
