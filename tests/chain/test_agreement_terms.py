"""A provider's check of an agreement's time terms, read on chain: the time LEFT on the compute condition,
and the time-outs and time locks that would strand the consumer's payment or hold the provider's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from airflow_nevermined_fl.hooks.nevermined import NeverminedHook, StateError

TOKEN = 10**18


def _locked(time_out: int, time_lock: int = 0) -> tuple[NeverminedHook, Any]:
    """The provider's hook and a locked agreement of the consumer on one of its assets."""
    consumer = NeverminedHook(nevermined_conn_id="nevermined_consumer")
    provider = NeverminedHook(nevermined_conn_id="nevermined_provider_2")
    session = uuid.uuid4().hex
    asset = provider.register_did(
        provider.did_seed(session, "data"), "0x" + "ab" * 32, [provider.address], "http://127.0.0.1/ddo"
    )
    agreement = consumer.create_compute_agreement(
        consumer.agreement_seed(session, provider.address),
        asset.did,
        provider.address,
        TOKEN,
        time_out=time_out,
        time_lock=time_lock,
    )
    consumer.lock_payment(agreement)
    return provider, agreement


def _verify(provider: NeverminedHook, agreement: Any, blocks: int = 1) -> Any:
    return provider.verify_compute_agreement(
        agreement, consumer=agreement.consumer, did=agreement.did, amount=TOKEN, min_blocks_left=blocks
    )


def test_time_left_not_the_time_out_length(devchain: dict[str, Any], tools: Any) -> None:
    provider, agreement = _locked(time_out=100)
    left = provider.blocks_left(agreement)
    assert 0 < left <= 100
    assert _verify(provider, agreement, blocks=left - 5)
    tools.mine(50)
    assert provider.blocks_left(agreement) <= left - 50
    with pytest.raises(
        StateError, match=rf"times out in \d+ blocks, before the session could end \({left - 5}"
    ):
        _verify(provider, agreement, blocks=left - 5)


@pytest.mark.parametrize(
    ("terms", "refused"),
    [
        ({"time_out": 0}, "compute time-out 0: never refundable"),
        (
            {"time_out": 100, "time_lock": 101},
            "escrow time lock 101 blocks, longer than the compute time-out 100",
        ),
    ],
)
def test_unfair_time_terms(devchain: dict[str, Any], terms: dict[str, int], refused: str) -> None:
    provider, agreement = _locked(**terms)
    with pytest.raises(StateError, match=refused):
        _verify(provider, agreement)


def test_another_providers_agreement_checked_without_its_amount(devchain: dict[str, Any]) -> None:
    """A participant's gateway checks the coordinator's agreement: locked, the caller's, on that DID."""
    provider, agreement = _locked(time_out=100)
    other = NeverminedHook(nevermined_conn_id="nevermined_provider_3")
    assert (
        other.verify_compute_agreement(
            agreement, consumer=agreement.consumer, did=agreement.did, amount=None
        ).agreement_id
        == agreement.agreement_id
    )
