"""Outages of the providers' dependencies mid-session, each in a real session through Airflow: four more
gateways reach the chain and the session storage through TCP proxies that go down and come back, as an
unreachable or restarted server does. A short storage outage mid-round is ridden out; one longer than
``stall_timeout`` fails the session and the teardown refunds every payment by itself; the chain lost while
the gateways release their escrow delays the release, and every provider is still paid exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from dagstack import (
    Stack,
    assert_failed_and_refunded,
    coordinator_at_round,
    gateway_workloads,
    payments,
    process_gone,
    run_with_fault,
    seconds_to,
)
from stalled_servers import OutageProxy

SUFFIX = "-proxied"


@dataclass
class Proxied:
    """The proxied gateways (public fields by name), the proxies in front of the chain and the storage."""

    gateways: dict[str, dict[str, Any]]
    chain: OutageProxy
    s3: OutageProxy

    def conf(self, stack: Stack, **overrides: Any) -> dict[str, Any]:
        return stack.conf(**stack.providers(self.gateways), **overrides)

    def logs(self, stack: Stack) -> dict[str, Path]:
        return {n: Path(g["log"]) for n, g in stack.extra_gateways[SUFFIX]["gateways"].items()}


def _proxy(url: str) -> OutageProxy:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return OutageProxy((parts.hostname, parts.port))


@pytest.fixture(scope="module")
def proxied(stack: Stack) -> Iterator[Proxied]:
    chain, s3 = _proxy(stack.chain["rpc_url"]), _proxy(stack.s3["endpoint"])
    try:
        gateways = stack.start_gateways("local", SUFFIX, rpc_url=chain.url, s3_endpoint=s3.url)
        yield Proxied(gateways, chain, s3)
    finally:  # the gateways stop with the stack
        chain.down()
        s3.down()


def _name(payment: dict[str, Any]) -> str:
    """The stack account of a proxied gateway's payment (same provider accounts, other DIDs)."""
    return str(payment["name"]).removesuffix(SUFFIX)


def _assert_paid_once(stack: Stack, summary: dict[str, Any], before: dict[str, int]) -> None:
    """Every provider paid its price once, the consumer charged their sum, no workload left running."""
    paid, after = payments(summary), stack.balances()
    for payment in paid:
        assert after[_name(payment)] - before[_name(payment)] == stack.base(payment["price"]), payment["name"]
    assert before["consumer"] - after["consumer"] == sum(stack.base(p["price"]) for p in paid)
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in paid})
    assert len(workloads) == 4 and all(process_gone(int(w.details["pid"])) for _, w in workloads)


def test_a_short_storage_outage_mid_round_is_ridden_out(
    stack: Stack, proxied: Proxied, tmp_path: Path
) -> None:
    conf = proxied.conf(stack, rounds=12, heartbeat=0.5, stall_timeout=30, session_timeout=300)
    before = stack.balances()

    def outage(started: float) -> float:
        coordinator_at_round(stack, started, 2, timeout=300, gateway="coordinator" + SUFFIX)
        began = time.time()
        proxied.s3.down()
        time.sleep(3)
        proxied.s3.up()
        return began

    summary, _, _ = run_with_fault(stack, conf, tmp_path, outage)

    assert summary["state"] == "success", summary["tasks"]
    metrics = summary["xcom"]["publish_model"]["return_value"]["rounds_metrics"]
    assert len(metrics) == conf["rounds"]
    assert {m["participants"] for m in metrics} == {3}  # nobody dropped over the outage
    assert summary["xcom"]["teardown"]["return_value"]["refunds"] == {}
    _assert_paid_once(stack, summary, before)


def test_a_storage_outage_longer_than_the_stall_timeout_fails_and_refunds(
    stack: Stack, proxied: Proxied, tmp_path: Path
) -> None:
    conf = proxied.conf(stack, rounds=500, heartbeat=0.5, stall_timeout=8, session_timeout=40)
    before = stack.balances()

    def outage(started: float) -> float:
        coordinator_at_round(stack, started, 1, timeout=300, gateway="coordinator" + SUFFIX)
        proxied.s3.down()
        return time.time()

    try:
        summary, output, began = run_with_fault(stack, conf, tmp_path, outage)
    finally:
        proxied.s3.up()
    settled_after = time.time() - began

    detected_after = seconds_to(output, "no progress for 8s", began)
    assert detected_after < conf["stall_timeout"] + 10
    assert_failed_and_refunded(stack, summary, before)
    print(f"outage to detection {detected_after:.1f}s, to every refund {settled_after:.1f}s")


def test_the_chain_lost_while_the_gateways_release_delays_payment_only(
    stack: Stack, proxied: Proxied, tmp_path: Path
) -> None:
    """The providers' RPC goes down two rounds before the end and stays down 10 s: no gateway can fulfil
    its compute condition or release its escrow; each retries on its next tick once the chain is back,
    ``publish_model`` waits for them, and every provider is paid once."""
    conf = proxied.conf(stack, rounds=10, heartbeat=0.5, stall_timeout=30, session_timeout=300)
    before = stack.balances()
    logs = proxied.logs(stack)
    offsets = {name: path.stat().st_size for name, path in logs.items()}

    def outage(started: float) -> float:
        coordinator_at_round(stack, started, conf["rounds"] - 2, timeout=300, gateway="coordinator" + SUFFIX)
        began = time.time()
        proxied.chain.down()
        time.sleep(10)
        proxied.chain.up()
        return began

    try:
        summary, _, began = run_with_fault(stack, conf, tmp_path, outage)
    finally:
        proxied.chain.up()

    assert summary["state"] == "success", summary["tasks"]
    settled_at = []
    for name, path in logs.items():  # each gateway's release met the outage, and was retried
        with path.open() as log:
            log.seek(offsets[name])
            lines = log.read().splitlines()
        assert any("settlement failed (will retry)" in line for line in lines), name
        (settled,) = [line for line in lines if "settled (escrow released" in line]
        settled_at.append(datetime.strptime(settled[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    released = summary["xcom"]["publish_model"]["return_value"]["released"]
    assert set(released) == {p["name"] for p in payments(summary)}
    assert all(txs["release"] for txs in released.values())
    _assert_paid_once(stack, summary, before)
    print(f"outage (10 s) to every provider's release: {max(settled_at) - began:.1f}s")
