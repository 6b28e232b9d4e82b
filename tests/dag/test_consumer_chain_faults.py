"""The consumer's chain RPC failing while a session locks its payments, through Airflow's own components
(task processes of the LocalExecutor, the DAG's retries): the node's answer to the first transaction lost
and the node unreachable for seconds; a task process SIGKILLed after its approve was mined, before its
lock was sent. The runs reach the chain through :class:`~stalled_servers.RpcProxy` (the consumer's account
as ``PROXIED_CONN_ID``). Each retry reads the chain first and finishes the locks: the session succeeds
and every token moves once."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from dagstack import PROXIED_CONN_ID, Api, Stack
from stalled_servers import DROP, FORWARD_THEN_DROP, HANG, socket_owner

from airflow_nevermined_fl.contracts.deployment import load_deployment

DAG = "fl_session"
LOCKS = ("lock_coordinator_payment", "lock_payment")
Decide = Callable[[dict[str, Any], BaseHTTPRequestHandler], "str | None"]


@pytest.fixture
def decide(api: Api) -> Iterator[Callable[[Decide], None]]:
    """Set the proxy's ``decide`` for this test; it forwards everything again afterwards."""
    yield lambda rule: setattr(api.rpc, "decide", rule)
    api.rpc.decide = None


def _trigger(api: Api, stack: Stack) -> str:
    """Trigger a 2-round session whose consumer account goes through the proxy; its run id."""
    return str(api.client.trigger(DAG, stack.conf(consumer_conn_id=PROXIED_CONN_ID))["dag_run_id"])


def _locks(api: Api, run_id: str) -> list[dict[str, Any]]:
    return [ti for ti in api.client.task_instances(DAG, run_id) if ti["task_id"] in LOCKS]


def _log(api: Api, run_id: str, ti: dict[str, Any], try_number: int) -> str:
    return api.client.task_log(DAG, run_id, ti["task_id"], try_number, ti["map_index"])


def _assert_paid_once(api: Api, stack: Stack, run_id: str, before: dict[str, int]) -> None:
    """The run succeeded; each provider got its price once, the consumer paid their sum (25) once."""
    assert api.client.run(DAG, run_id)["state"] == "success"
    after = stack.balances()
    assert before["consumer"] - after["consumer"] == stack.base(25)
    assert after["coordinator"] - before["coordinator"] == stack.base(10)
    assert all(after[f"provider-{i}"] - before[f"provider-{i}"] == stack.base(5) for i in (1, 2, 3))
    logs = [p.read_text(errors="replace") for p in Path(api.state["home"], "logs").rglob("*") if p.is_file()]
    assert not any("nonce too low" in text.lower() for text in logs)


def test_the_chain_lost_during_the_locks_the_retries_lock_once(
    api: Api, stack: Stack, decide: Callable[[Decide], None]
) -> None:
    """The node mines the run's first transaction (an agreement) but its answer is lost, and for 4 s every
    request is dropped: the lock tasks fail with the project's error and are retried by Airflow; the lost
    agreement is found on chain, not created again."""
    down_until = 0.0

    def rule(request: dict[str, Any], _: BaseHTTPRequestHandler) -> str | None:
        nonlocal down_until
        if time.monotonic() < down_until:
            return DROP
        if request.get("method") == "eth_sendRawTransaction" and not down_until:
            down_until = time.monotonic() + 4
            return FORWARD_THEN_DROP
        return None

    before = stack.balances()
    decide(rule)
    run_id = _trigger(api, stack)
    api.client.wait_run(DAG, run_id, timeout=600)
    _assert_paid_once(api, stack, run_id, before)

    retried = [ti for ti in _locks(api, run_id) if ti["try_number"] > 1]
    assert retried, "no lock task met the outage"
    first_tries = {(ti["task_id"], ti["map_index"]): _log(api, run_id, ti, 1) for ti in retried}
    assert all("ChainUnreachableError" in log for log in first_tries.values())
    assert not any("requests.exceptions" in log for log in first_tries.values())  # no raw traceback
    (lost,) = [key for key, log in first_tries.items() if "may still be mined" in log]
    payment = api.client.xcom(DAG, run_id, lost[0], map_index=lost[1])
    assert payment["tx_hashes"]["agreement"] is None  # created by the lost transaction, found by the retry
    assert payment["tx_hashes"]["lock"]
    links = api.client.extra_links(DAG, run_id, lost[0], lost[1])
    assert links == {"Lock transaction": None}  # this connection names no block explorer: no link
    print(f"{len(retried)} of 4 lock tasks failed on the outage and were retried")


def test_a_task_process_killed_between_approve_and_lock_pays_once(
    api: Api, stack: Stack, decide: Callable[[Decide], None]
) -> None:
    """The first lock's gas estimate is held by the proxy (its approve is mined), and the task process
    that asked is SIGKILLed: Airflow retries the task, which finds its agreement and locks once."""
    lock_condition = load_deployment(stack.chain["deployment_file"]).addresses["LockPaymentCondition"]
    held, asker = threading.Event(), dict[str, int]()

    def rule(request: dict[str, Any], handler: BaseHTTPRequestHandler) -> str | None:
        if held.is_set() or request.get("method") != "eth_estimateGas":
            return None
        if str(request["params"][0].get("to", "")).lower() != lock_condition.lower():
            return None
        asker["port"] = handler.client_address[1]
        held.set()
        return HANG  # never reaches the node

    before = stack.balances()
    decide(rule)
    run_id = _trigger(api, stack)
    assert held.wait(300), "no lock reached its gas estimate"
    pid = socket_owner(asker["port"])
    title = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    assert title.startswith("airflow worker -- "), title  # the task process, not its supervisor
    os.kill(pid, signal.SIGKILL)
    api.client.wait_run(DAG, run_id, timeout=600)
    _assert_paid_once(api, stack, run_id, before)

    (killed,) = [ti for ti in _locks(api, run_id) if ti["try_number"] > 1]  # the others ran once
    assert killed["try_number"] == 2 and killed["state"] == "success"
    first, retry = _log(api, run_id, killed, 1), _log(api, run_id, killed, 2)
    assert "createAgreement mined" in first and "NeverminedToken.approve mined" in first
    assert "LockPaymentCondition.fulfill mined" not in first
    assert "createAgreement mined" not in retry  # its agreement, found on chain
    assert retry.count("LockPaymentCondition.fulfill mined") == 1
    # An approval sets the allowance: the retry approves again only when another lock has spent it since.
    assert retry.count("NeverminedToken.approve mined") <= 1
