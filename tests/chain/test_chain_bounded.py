"""Bounded chain calls: a node that refuses, never answers, drops or loses an answer, and a transaction
not mined in time, each a clear ``ChainError`` within its bound, and a retry that sends nothing twice.

Real components: the devstack anvil (and a second one of our own with mining switched off), behind a
JSON-RPC proxy where a test needs the node to fail half-way. The time bounds are correctness bounds (the
call gives up), with generous slack: not performance assertions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stalled_servers import DROP, FORWARD_THEN_HANG, HANG, RpcProxy, SilentServer, closed_url, elapsed

from airflow_nevermined_fl.contracts.client import RECEIPT_TIMEOUT, RPC_TIMEOUT, connect
from airflow_nevermined_fl.contracts.deployment import load_deployment
from airflow_nevermined_fl.contracts.errors import (
    ChainError,
    ChainUnreachableError,
    InvalidInputError,
    PendingTransactionError,
    ReceiptTimeoutError,
    RpcTimeoutError,
    TxRevertedError,
)
from airflow_nevermined_fl.contracts.keeper import HOOK_CONTRACTS, ComputeAgreement, Keeper, KeeperSettings
from airflow_nevermined_fl.devtools.devstack import chain

TOKEN = 10**18
SLACK = 10.0  # seconds on top of a bound: CI machines stall, the bound is what matters


def keeper(state: dict[str, Any], index: int, rpc_url: str | None = None, **settings: Any) -> Keeper:
    return Keeper(
        KeeperSettings(
            rpc_url=rpc_url or state["rpc_url"],
            private_key=chain.account(index).key.to_0x_hex(),
            deployment=load_deployment(state["deployment_file"], HOOK_CONTRACTS),
            where=f"keeper {index}",
            **settings,
        )
    )


def open_agreement(state: dict[str, Any], consumer: Keeper, provider_index: int) -> ComputeAgreement:
    """A registered DID and an agreement for it, its tokens approved: the next consumer step is the lock."""
    provider = keeper(state, provider_index)
    session = uuid.uuid4().hex
    seed = provider.did_seed(session, "data")
    asset = provider.register_did(seed, "0x" + "ab" * 32, [provider.address], "http://127.0.0.1/ddo")
    agreement = consumer.create_compute_agreement(
        consumer.agreement_seed(session, provider.address), asset.did, provider.address, 2 * TOKEN
    )
    consumer._tx("NeverminedToken", "approve", consumer._addr("LockPaymentCondition"), agreement.total)
    return agreement


def nonces(w3: Any, address: str) -> tuple[int, int]:
    return w3.eth.get_transaction_count(address, "latest"), w3.eth.get_transaction_count(address, "pending")


def test_defaults_are_bounded() -> None:
    assert 0 < RPC_TIMEOUT <= 60 and 0 < RECEIPT_TIMEOUT <= 600
    settings = KeeperSettings(rpc_url="http://x", private_key="", deployment=None)  # type: ignore[arg-type]
    assert (settings.rpc_timeout, settings.receipt_timeout) == (RPC_TIMEOUT, RECEIPT_TIMEOUT)
    for bad in (0, -1, float("inf"), "30", True):
        with pytest.raises(InvalidInputError, match="keeper: rpc_timeout: expected a positive number"):
            KeeperSettings(rpc_url="http://x", private_key="", deployment=None, rpc_timeout=bad)  # type: ignore[arg-type]


def test_closed_port_is_unreachable_within_the_retries(devchain: dict[str, Any]) -> None:
    url = closed_url()
    start = time.monotonic()
    with pytest.raises(ChainUnreachableError) as info:
        keeper(devchain, chain.CONSUMER, url, rpc_retries=2, rpc_timeout=1.0).token_balance(
            chain.accounts()["consumer"]
        )
    assert elapsed(start) < 0.5 + SLACK  # two refused attempts, 0.5 s apart
    assert not isinstance(info.value, RpcTimeoutError)
    message = str(info.value)
    assert message.startswith(f"chain RPC {url} unreachable after 2 attempts while connecting")
    assert "ConnectionError (Connection refused)" in message
    assert info.value.rpc_url == url


def test_silent_node_times_out_within_its_bound(devchain: dict[str, Any]) -> None:
    with SilentServer() as silent:
        start = time.monotonic()
        with pytest.raises(RpcTimeoutError) as info:
            keeper(devchain, chain.CONSUMER, silent.url, rpc_retries=2, rpc_timeout=1.0).get_conn()
        took = elapsed(start)
        assert silent.accepted == 2  # it did connect, twice, and waited each time
    assert 2 * 1.0 <= took < 2 * 1.0 + 0.5 + SLACK
    assert str(info.value) == (
        f"chain RPC {silent.url} unreachable after 2 attempts while connecting"
        " (last: no answer within 1 s: ReadTimeout)"
    )


@pytest.fixture
def proxy(devchain: dict[str, Any]) -> Iterator[RpcProxy]:
    with RpcProxy(devchain["rpc_url"]) as server:
        yield server


def test_node_lost_mid_session_names_url_and_call(devchain: dict[str, Any], proxy: RpcProxy) -> None:
    consumer = keeper(devchain, chain.CONSUMER, proxy.url, rpc_timeout=1.0)
    address = consumer.address  # connected through the proxy
    assert consumer.token_balance(address) > 0

    proxy.rules["eth_call"] = HANG
    start = time.monotonic()
    with pytest.raises(RpcTimeoutError) as info:
        consumer.token_balance(address)
    assert elapsed(start) < 1.0 + SLACK
    assert str(info.value) == (
        f"chain RPC {proxy.url}: no answer within 1 s while calling eth_call to NeverminedToken: ReadTimeout"
    )

    proxy.rules["eth_call"] = DROP
    with pytest.raises(
        ChainUnreachableError, match=r"unreachable while calling eth_call to NeverminedToken: "
    ):
        consumer.token_balance(address)

    proxy.rules.clear()
    assert consumer.token_balance(address) > 0  # the node is back: the same keeper goes on


def test_lost_answer_to_a_payment_is_retried_without_a_second_transaction(
    devchain: dict[str, Any], proxy: RpcProxy, w3: Any
) -> None:
    consumer = keeper(devchain, chain.CONSUMER, proxy.url, rpc_timeout=1.0)
    agreement = open_agreement(devchain, keeper(devchain, chain.CONSUMER), chain.DATA_PROVIDERS[1])
    balance, before = consumer.token_balance(consumer.address), nonces(w3, consumer.address)

    # The node gets LockPaymentCondition.fulfill (and mines it), its answer never comes back.
    proxy.rules["eth_sendRawTransaction"] = FORWARD_THEN_HANG
    start = time.monotonic()
    with pytest.raises(RpcTimeoutError) as info:
        consumer.lock_payment(agreement)
    assert elapsed(start) < 1.0 + SLACK
    message = str(info.value)
    assert message.startswith(
        f"chain RPC {proxy.url}: no answer within 1 s while sending LockPaymentCondition.fulfill"
        " (eth_sendRawTransaction): ReadTimeout (transaction 0x"
    )
    assert message.endswith("may still be mined; a retry checks the chain first)")
    assert nonces(w3, consumer.address) == (before[0] + 1, before[1] + 1)  # it was sent, once

    # The retry (same keeper, node answering again) reads the chain: locked, nothing sent.
    proxy.rules.clear()
    assert consumer.lock_payment(agreement) is None
    assert nonces(w3, consumer.address) == (before[0] + 1, before[1] + 1)
    assert consumer.condition_states(agreement)["lock"] == "fulfilled"
    assert consumer.token_balance(consumer.address) == balance - agreement.total


def test_dropped_send_names_the_transaction_and_sends_nothing(
    devchain: dict[str, Any], proxy: RpcProxy, w3: Any
) -> None:
    consumer = keeper(devchain, chain.CONSUMER, proxy.url, rpc_timeout=1.0)
    agreement = open_agreement(devchain, keeper(devchain, chain.CONSUMER), chain.DATA_PROVIDERS[1])
    before = nonces(w3, consumer.address)
    proxy.rules["eth_sendRawTransaction"] = DROP
    with pytest.raises(ChainUnreachableError) as info:
        consumer.lock_payment(agreement)
    assert str(info.value).startswith(
        f"chain RPC {proxy.url}: unreachable while sending LockPaymentCondition.fulfill"
        " (eth_sendRawTransaction): ConnectionError"
    )
    assert nonces(w3, consumer.address) == before  # the node never got it
    proxy.rules.clear()
    assert consumer.lock_payment(agreement)  # so the retry sends it
    assert nonces(w3, consumer.address) == (before[0] + 1, before[1] + 1)


@pytest.fixture
def unmined_chain(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A chain of our own (contracts deployed, consumer funded) whose blocks we mine by hand."""
    state = chain.up(tmp_path, None)
    try:
        yield state
    finally:
        chain.down(state)


def test_receipt_timeout_is_distinct_and_a_retry_after_mining_sends_nothing(
    unmined_chain: dict[str, Any],
) -> None:
    w3 = connect(unmined_chain["rpc_url"])
    consumer = keeper(unmined_chain, chain.CONSUMER, receipt_timeout=1.0)
    agreement = open_agreement(unmined_chain, consumer, chain.DATA_PROVIDERS[0])
    # Mining by hand from now on: no automine, and no interval blocks (the devstack chain has those too).
    for method, params in (("evm_setAutomine", [False]), ("evm_setIntervalMining", [0])):
        assert "error" not in w3.provider.make_request(method, params)
    latest, pending = nonces(w3, consumer.address)
    assert latest == pending

    start = time.monotonic()
    with pytest.raises(ReceiptTimeoutError) as info:
        consumer.lock_payment(agreement)
    assert 1.0 <= elapsed(start) < 1.0 + SLACK
    err = info.value
    assert not isinstance(err, TxRevertedError)
    assert str(err) == (
        f"LockPaymentCondition.fulfill: transaction {err.tx_hash} not mined within 1 s"
        " (it may still be mined; a retry checks the chain first)"
    )
    assert nonces(w3, consumer.address) == (latest, pending + 1)  # in the pool, not mined

    # A retry while it is still pending sends nothing: the state it read may be about to change.
    with pytest.raises(
        PendingTransactionError, match=r"LockPaymentCondition.fulfill not sent: .* not mined yet"
    ):
        consumer.lock_payment(agreement)
    assert nonces(w3, consumer.address) == (latest, pending + 1)
    assert consumer.condition_states(agreement)["lock"] == "unfulfilled"

    w3.provider.make_request("evm_mine", [])
    assert w3.eth.get_transaction_receipt(err.tx_hash)["status"] == 1
    assert consumer.lock_payment(agreement) is None  # found done: no second transaction
    assert nonces(w3, consumer.address) == (latest + 1, pending + 1)
    assert consumer.condition_states(agreement)["lock"] == "fulfilled"


def test_every_new_error_is_a_chain_error() -> None:
    for error in (ChainUnreachableError, RpcTimeoutError, ReceiptTimeoutError, PendingTransactionError):
        assert issubclass(error, ChainError)
