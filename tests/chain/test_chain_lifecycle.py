"""Agreements, escrow, refunds, DIDs and provenance against the real contracts on anvil."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest

from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.hooks.nevermined import ComputeAgreement, NeverminedHook, StateError

TOKEN = 10**18


def hook(conn_id: str) -> NeverminedHook:
    return NeverminedHook(nevermined_conn_id=conn_id)


def register_asset(provider: NeverminedHook, session: str, name: str = "data") -> Any:
    seed = provider.did_seed(session, name)
    return provider.register_did(seed, "0x" + "ab" * 32, [provider.address], f"http://127.0.0.1/ddo/{name}")


def balances(consumer: NeverminedHook, *addresses: str) -> list[int]:
    return [consumer.token_balance(a) for a in addresses]


def test_full_lifecycle_moves_tokens_and_reruns_send_nothing(
    devchain: dict[str, Any], tools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    consumer, provider = hook("nevermined_consumer"), hook("nevermined_provider_1")
    coordinator = chain.accounts()["coordinator_provider"]
    session = uuid.uuid4().hex
    seed = provider.did_seed(session, "data")
    asset = register_asset(provider, session)
    assert asset.tx_hash and asset.did == provider.did_for(seed, provider.address)
    assert consumer.get_did(asset.did).to_dict() == {**asset.to_dict(), "tx_hash": None}

    def create_agreement() -> ComputeAgreement:
        return consumer.create_compute_agreement(
            consumer.agreement_seed(session, provider.address),
            asset.did,
            provider.address,
            [7 * TOKEN, 3 * TOKEN],
            receivers=[provider.address, coordinator],
        )

    agreement = create_agreement()
    assert agreement.tx_hash
    assert consumer.condition_states(agreement) == dict.fromkeys(("compute", "lock", "escrow"), "unfulfilled")
    escrow = agreement.escrow
    who = (consumer.address, escrow, provider.address, coordinator)
    before = balances(consumer, *who)

    assert consumer.lock_payment(agreement)
    after_lock = balances(consumer, *who)
    assert [a - b for a, b in zip(after_lock, before, strict=True)] == [-10 * TOKEN, 10 * TOKEN, 0, 0]
    assert consumer.condition_states(agreement)["lock"] == "fulfilled"

    # The agreement travels through XCom as JSON.
    payload = json.loads(json.dumps(agreement.to_dict()))
    with pytest.raises(StateError, match="needs it fulfilled"):
        provider.release_escrow(payload)
    assert provider.fulfill_compute(payload)
    assert provider.release_escrow(ComputeAgreement.from_dict(payload))
    after = balances(consumer, *who)
    assert [a - b for a, b in zip(after, before, strict=True)] == [-10 * TOKEN, 0, 7 * TOKEN, 3 * TOKEN]
    assert consumer.condition_states(agreement) == dict.fromkeys(("compute", "lock", "escrow"), "fulfilled")

    # Every step re-run (an Airflow retry): same result, no transaction, no token moves.
    nonces = [tools.nonce(a) for a in (consumer.address, provider.address)]
    assert register_asset(provider, session).to_dict() == {**asset.to_dict(), "tx_hash": None}
    again = create_agreement()
    assert again.to_dict() == {**agreement.to_dict(), "tx_hash": None}
    assert consumer.lock_payment(agreement) is None
    assert provider.fulfill_compute(agreement) is None
    assert provider.release_escrow(agreement) is None
    assert [tools.nonce(a) for a in (consumer.address, provider.address)] == nonces
    assert balances(consumer, *who) == after
    for key in tools.secret_keys():
        assert key not in caplog.text
    assert "nevermined_consumer" in repr(consumer) and consumer.address not in repr(consumer)


def test_refund_after_time_out_returns_escrow_to_consumer(devchain: dict[str, Any], tools: Any) -> None:
    consumer, provider = hook("nevermined_consumer"), hook("nevermined_provider_2")
    session = uuid.uuid4().hex
    asset = register_asset(provider, session)
    agreement = consumer.create_compute_agreement(
        consumer.agreement_seed(session, provider.address),
        asset.did,
        provider.address,
        5 * TOKEN,
        time_out=30,
    )
    before = balances(consumer, consumer.address, agreement.escrow, provider.address)
    with pytest.raises(StateError, match="not locked"):
        consumer.refund(agreement)
    consumer.lock_payment(agreement)
    with pytest.raises(StateError, match="has not timed out"):
        consumer.refund(agreement)
    tools.mine(32)  # past the time-out (the chain also mines a block a second)
    nonce = tools.nonce(provider.address)
    with pytest.raises(StateError, match="timed out"):
        provider.fulfill_compute(agreement)
    assert tools.nonce(provider.address) == nonce
    assert consumer.refund(agreement)
    assert balances(consumer, consumer.address, agreement.escrow, provider.address) == before
    assert consumer.condition_states(agreement) == {
        "compute": "aborted",
        "lock": "fulfilled",
        "escrow": "fulfilled",
    }
    nonce = tools.nonce(consumer.address)
    assert consumer.refund(agreement) is None
    assert tools.nonce(consumer.address) == nonce
    with pytest.raises(StateError, match="refunded"):
        provider.release_escrow(agreement)
    with pytest.raises(StateError, match="aborted"):
        provider.fulfill_compute(agreement)


def test_refund_is_refused_once_compute_is_fulfilled(devchain: dict[str, Any]) -> None:
    consumer, provider = hook("nevermined_consumer"), hook("nevermined_coordinator_provider")
    session = uuid.uuid4().hex
    asset = register_asset(provider, session, "coordinator")
    agreement = consumer.create_compute_agreement(
        consumer.agreement_seed(session, provider.address), asset.did, provider.address, TOKEN, time_out=1000
    )
    with pytest.raises(StateError, match="not locked: refusing"):
        provider.fulfill_compute(agreement)
    consumer.lock_payment(agreement)
    provider.fulfill_compute(agreement)
    with pytest.raises(StateError, match="release the escrow instead"):
        consumer.refund(agreement)
    provider.release_escrow(agreement)
    with pytest.raises(StateError, match="already released"):
        consumer.refund(agreement)


def test_half_done_lock_resumes_without_repeating_the_approval(devchain: dict[str, Any], tools: Any) -> None:
    consumer, provider = hook("nevermined_consumer"), hook("nevermined_provider_3")
    session = uuid.uuid4().hex
    asset = register_asset(provider, session)
    agreement = consumer.create_compute_agreement(
        consumer.agreement_seed(session, provider.address), asset.did, provider.address, 2 * TOKEN
    )
    # A first attempt died after its approval was mined.
    consumer._tx("NeverminedToken", "approve", consumer._addr("LockPaymentCondition"), 2 * TOKEN)
    nonce = tools.nonce(consumer.address)
    assert consumer.lock_payment(agreement)
    assert tools.nonce(consumer.address) == nonce + 1  # only LockPaymentCondition.fulfill
    assert consumer.condition_states(agreement)["lock"] == "fulfilled"


def test_only_a_provider_of_the_did_fulfills_compute(devchain: dict[str, Any], tools: Any) -> None:
    consumer, provider, other = (
        hook("nevermined_consumer"),
        hook("nevermined_provider_1"),
        hook("nevermined_provider_2"),
    )
    session = uuid.uuid4().hex
    asset = register_asset(provider, session)
    agreement = consumer.create_compute_agreement(
        consumer.agreement_seed(session, provider.address), asset.did, provider.address, TOKEN
    )
    consumer.lock_payment(agreement)
    nonce = tools.nonce(other.address)
    with pytest.raises(ValueError, match="neither owner nor provider"):
        other.fulfill_compute(agreement)
    assert tools.nonce(other.address) == nonce


def test_provenance_of_a_model_from_workflows(devchain: dict[str, Any], tools: Any) -> None:
    consumer = hook("nevermined_consumer")
    coordinator = chain.accounts()["coordinator_provider"]
    session = uuid.uuid4().hex
    workflows = [
        consumer.register_did(
            consumer.did_seed(session, n), "0x" + "cd" * 32, [coordinator], f"http://x/{n}"
        ).did
        for n in ("coordinator", "participant-1")
    ]
    model = consumer.register_did(
        consumer.did_seed(session, "model"), "0x" + "ef" * 32, [], "http://x/model"
    ).did
    records = consumer.record_provenance(model, workflows, "fl-session", attributes=session)
    assert [r["method"] for r in records] == ["wasDerivedFrom", "used"] * 2
    assert all(r["tx_hash"] for r in records)
    derived = [r for r in records if r["method"] == "wasDerivedFrom"]
    assert [(r["did"], r["related_did"]) for r in derived] == [(model, w) for w in workflows]
    assert [r["did"] for r in records if r["method"] == "used"] == workflows
    assert all(r["agent"] == consumer.address for r in records)

    nonce = tools.nonce(consumer.address)
    again = consumer.record_provenance(model, workflows, "fl-session", attributes=session)
    assert [r["tx_hash"] for r in again] == [None] * 4
    assert [{**r, "tx_hash": None} for r in records] == again
    assert tools.nonce(consumer.address) == nonce
    assert consumer.get_provenance(records[0]["prov_id"]) == {
        k: v for k, v in records[0].items() if k not in ("method", "tx_hash")
    }


def test_a_revert_names_contract_function_and_reason(devchain: dict[str, Any], tools: Any) -> None:
    from airflow_nevermined_fl.contracts import TxRevertedError

    provider = hook("nevermined_provider_1")
    session = uuid.uuid4().hex
    register_asset(provider, session)
    seed = bytes.fromhex(provider.did_seed(session, "data")[2:])
    nonce = tools.nonce(provider.address)
    with pytest.raises(TxRevertedError) as info:
        provider._tx("DIDRegistry", "registerAttribute", seed, bytes(32), [], "http://x")
    assert str(info.value) == "DIDRegistry.registerAttribute reverted: DID already registered"
    assert tools.nonce(provider.address) == nonce


CRASH_MID_LOCK = """
import json, os, signal, sys
from airflow_nevermined_fl.hooks.nevermined import NeverminedHook
consumer = NeverminedHook("nevermined_consumer")
fulfill = type(consumer)._fulfill
def crash(self, condition, *args):
    if condition == "LockPaymentCondition":  # the approve is mined: die before the lock is sent
        os.kill(os.getpid(), signal.SIGKILL)
    return fulfill(self, condition, *args)
type(consumer)._fulfill = crash
consumer.lock_payment(json.loads(sys.argv[1]))
"""


def test_a_worker_killed_between_approve_and_lock_pays_once_on_retry(
    devchain: dict[str, Any], tools: Any
) -> None:
    """A task process SIGKILLed after its approve was mined and before the lock was sent (a crash mid
    transaction sequence): the retry, in a new process, locks without approving again; one payment."""
    consumer, provider = hook("nevermined_consumer"), hook("nevermined_provider_1")
    session = uuid.uuid4().hex
    asset = register_asset(provider, session)
    agreement = consumer.create_compute_agreement(
        consumer.agreement_seed(session, provider.address),
        asset.did,
        provider.address,
        5 * TOKEN,
        time_out=600,
    )
    before = balances(consumer, consumer.address, agreement.escrow)
    nonce = tools.nonce(consumer.address)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_MID_LOCK, json.dumps(agreement.to_dict())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert tools.nonce(consumer.address) == nonce + 1  # the approve, and nothing more
    assert consumer.condition_states(agreement)["lock"] == "unfulfilled"
    assert balances(consumer, consumer.address, agreement.escrow) == before  # no token moved yet

    assert consumer.lock_payment(agreement)  # the retry
    assert tools.nonce(consumer.address) == nonce + 2  # the lock alone: the approve was not sent again
    consumer_after, escrow_after = balances(consumer, consumer.address, agreement.escrow)
    assert (before[0] - consumer_after, escrow_after - before[1]) == (5 * TOKEN, 5 * TOKEN)
    assert consumer.lock_payment(agreement) is None and tools.nonce(consumer.address) == nonce + 2
