"""Payments: lock per provider (escrow), gateway checks, release on completion, refund on failure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.operators.base import SessionOperator, nevermined

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_nevermined_fl.hooks.nevermined import ComputeAgreement, NeverminedHook


def agreement_of(payment: dict[str, Any]) -> ComputeAgreement:
    from airflow_nevermined_fl.hooks.nevermined import ComputeAgreement

    return ComputeAgreement.from_dict(payment["agreement"])


def gateway_check(hook: NeverminedHook, payment: dict[str, Any]) -> None:
    """The provider's gateway: refuse to run unless the consumer's payment is locked on chain."""
    states = hook.condition_states(agreement_of(payment))
    if states.get("lock") != "fulfilled":
        raise AirflowFailException(
            f"gateway: payment for {payment['name']} (agreement {payment['agreement']['agreement_id']}) "
            f"is not locked: conditions {states}"
        )


def asset_descriptor(provider: dict[str, Any]) -> dict[str, Any]:
    """Public description of the compute service a provider sells (its asset DID's checksum)."""
    if provider["role"] == "coordinator":
        return {"type": "fl-coordinator-service", "name": provider["name"]}
    return {"type": "dataset", "name": provider["name"], "location": provider["dataset"]}


class LockPaymentOperator(SessionOperator):
    """Consumer locks one provider's price in escrow (EscrowComputeExecutionTemplate agreement).

    Mapped over the providers. The provider's compute service DID is registered by the provider on
    first use (standing in for its asset publication). Every step reads the chain first: a retry
    creates no second agreement and locks nothing twice.
    """

    template_fields = ("session", "provider")
    ui_color = "#f8e3c4"

    def __init__(self, *, provider: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.provider = provider

    def execute(self, context: Context) -> dict[str, Any]:
        p = self.provider
        provider_hook = nevermined(p["conn_id"])
        consumer = nevermined(self.conf["consumer_conn_id"])
        checksum = ddo.checksum(asset_descriptor(p))  # also the seed: one DID per service description
        url = p.get("dataset") or f"nvfl://{p['name']}/fl-coordinator"
        asset = provider_hook.register_did(checksum, checksum, [provider_hook.address], url)
        agreement = consumer.create_compute_agreement(
            consumer.agreement_seed(f"{self.session_id}/{p['name']}", provider_hook.address),
            asset.did,
            provider_hook.address,
            p["price"],
            time_out=self.conf["refund_after_blocks"],
        )
        lock_tx = consumer.lock_payment(agreement)
        self.log.info(
            "%s %s: agreement %s, %d locked (tx %s)",
            p["role"],
            p["name"],
            agreement.agreement_id,
            p["price"],
            lock_tx or "none: already locked",
        )
        return {
            "name": p["name"],
            "role": p["role"],
            "provider": provider_hook.address,
            "conn_id": p["conn_id"],
            "price": p["price"],
            "asset_did": asset.did,
            "agreement": agreement.to_dict(),
            "tx_hashes": {"asset": asset.tx_hash, "agreement": agreement.tx_hash, "lock": lock_tx},
        }


def complete(payment: dict[str, Any]) -> dict[str, str | None]:
    """On completion: the provider fulfils ComputeExecutionCondition, then its escrow is released.

    Tx hashes; None for a step already done (retry-safe)."""
    hook = nevermined(payment["conn_id"])
    agreement = agreement_of(payment)
    return {"compute": hook.fulfill_compute(agreement), "release": hook.release_escrow(agreement)}


def refund(consumer_conn_id: str, payment: dict[str, Any]) -> str | None:
    """Consumer's refund of an unreleased payment, where the contracts allow it now."""
    return nevermined(consumer_conn_id).refund(agreement_of(payment))
