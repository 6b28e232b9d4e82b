"""docker-compose.yaml brought up for real: the images ``nvfl images build --all`` makes, the ``.env`` of
``nvfl compose env`` (free ports), Debian's ``docker-compose``. Every service healthy; sessions triggered over
REST run on the CeleryExecutor's two workers (separate containers, each with its own account file lock, so
only the one-slot consumer pool serializes the consumer's transactions); ``down -v`` leaves nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from airflow_nevermined_fl.devtools import compose, images
from airflow_nevermined_fl.devtools.compose_stack import ComposeStack
from airflow_nevermined_fl.devtools.demo import token_units
from airflow_nevermined_fl.gateway.launchers.docker import LABEL

DAG = "fl_session"
# The steps sending the consumer's transactions; the teardown too, but it may defer (and free its slot).
SENDING = {"lock_coordinator_payment", "lock_payment", "publish_workflow", "publish_model"}
TIMINGS: dict[str, float] = {}  # seconds, printed at the end (-s) for docs/docker.md


@pytest.fixture(scope="module")
def stack(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    started = time.monotonic()
    images.build_all(engine, compose=True)
    TIMINGS["images"] = time.monotonic() - started
    stack = ComposeStack(engine, tmp_path_factory.mktemp("compose-up"))
    try:
        started = time.monotonic()
        stack.up()
        TIMINGS["up"] = time.monotonic() - started
        stack.client.wait_dag(DAG, timeout=300)
        yield stack
    finally:
        started = time.monotonic()
        stack.down()
        TIMINGS["down"] = time.monotonic() - started
        assert stack.leftovers() == {"containers": 0, "networks": 0, "volumes": 0}
        print(f"compose stack timings (s): {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def _conf(stack: ComposeStack) -> dict[str, Any]:
    return {**stack.providers(), "rounds": 2, "stall_timeout": 120, "session_timeout": 900}


def _run_sessions(stack: ComposeStack, count: int) -> list[dict[str, Any]]:
    """``count`` sessions triggered at once over REST, each run to its end; their task instances."""
    conf = _conf(stack)
    run_ids = [stack.client.trigger(DAG, conf)["dag_run_id"] for _ in range(count)]
    for run_id in run_ids:
        run = stack.client.wait_run(DAG, run_id, timeout=900)
        assert run["state"] == "success", _failures(stack, run_id)
    return [ti for run_id in run_ids for ti in stack.client.task_instances(DAG, run_id)]


def _failures(stack: ComposeStack, run_id: str) -> str:
    """What a failed run reports: its failed steps and the end of their logs."""
    lines = [f"run {run_id} failed"]
    for ti in stack.client.task_instances(DAG, run_id):
        if ti["state"] == "failed":
            log = stack.client.task_log(DAG, run_id, ti["task_id"], ti["try_number"], ti["map_index"])
            lines.append(f"--- {ti['task_id']}[{ti['map_index']}] try {ti['try_number']}:")
            lines += log.splitlines()[-30:]
    return "\n".join(lines)


def _wait_balances(stack: ComposeStack, expected: dict[str, int], timeout: float = 120) -> None:
    """The gateways release their payments themselves once the model is published: until they have."""
    deadline = time.monotonic() + timeout
    while (balances := stack.balances()) != expected and time.monotonic() < deadline:
        time.sleep(2)
    assert balances == expected


def _check_sessions(stack: ComposeStack, count: int) -> list[dict[str, Any]]:
    """``count`` sessions at once: all succeed at their first try of every step (no nonce error, nothing
    retried), their workloads are gone, every party's balance moves by exactly its price per session."""
    units = token_units(stack.chain_state)
    prices = {name: units.base(offer["price"]) for name, offer in stack.offers().items()}
    before = stack.balances()
    started = time.monotonic()
    tis = _run_sessions(stack, count)
    TIMINGS[f"{count} session(s)"] = time.monotonic() - started
    assert all(ti["state"] in ("success", "skipped") for ti in tis), [
        (ti["task_id"], ti["state"]) for ti in tis
    ]
    assert all(ti["try_number"] == 1 for ti in tis if ti["state"] == "success")
    expected = {name: before[name] + count * price for name, price in prices.items()}
    _wait_balances(stack, expected | {"consumer": before["consumer"] - count * sum(prices.values())})
    return tis


def _interval(ti: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(str(ti["start_date"])), datetime.fromisoformat(str(ti["end_date"]))


def test_a_session_over_rest_runs_on_both_workers(stack: ComposeStack, engine: Any) -> None:
    tis = _check_sessions(stack, 1)
    ran = [ti for ti in tis if ti["state"] == "success"]
    assert {ti["hostname"] for ti in ran} == {"worker-1", "worker-2"}, [
        (t["task_id"], t["hostname"]) for t in ran
    ]
    assert not engine.containers(all=True, filters={"label": f"{LABEL}.dag_id={DAG}"})  # workloads gone


def test_three_sessions_at_once_on_one_account_across_the_workers(stack: ComposeStack, engine: Any) -> None:
    tis = _check_sessions(stack, 3)
    assert {ti["hostname"] for ti in tis if ti["state"] == "success"} == {"worker-1", "worker-2"}
    # The consumer's transactions: all in its pool, never two at once, from both workers.
    pooled = {ti["task_id"] for ti in tis if ti["pool"] == compose.CONSUMER_POOL}
    assert pooled == SENDING | {"teardown"}
    sending = sorted((ti for ti in tis if ti["task_id"] in SENDING), key=_interval)
    assert {ti["hostname"] for ti in sending} == {"worker-1", "worker-2"}
    for first, second in zip(sending, sending[1:], strict=False):
        assert _interval(first)[1] <= _interval(second)[0], (first["task_id"], second["task_id"])
    assert not engine.containers(all=True, filters={"label": f"{LABEL}.dag_id={DAG}"})
