"""Payments: the consumer locks each provider's price in escrow; refunds on failure.

The provider's gateway, not the consumer, fulfils the compute condition and releases its escrow once its
work is done; the consumer never holds a provider's key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.operators.base import SessionOperator, nevermined

if TYPE_CHECKING:
    from airflow.sdk import Context


class LockPaymentOperator(SessionOperator):
    """Consumer locks one provider's price (from its asset DDO) in escrow: an EscrowComputeExecutionTemplate
    agreement on the provider's asset DID, paying the provider's address.

    Mapped over the data providers (and once for the coordinator). Every step reads the chain first: a
    retry creates no second agreement and locks nothing twice.

    Output: ``name``, ``role``, ``did``, ``provider`` (address), ``price``, ``endpoint`` (gateway),
    ``agreement``, ``tx_hashes`` ({"agreement", "lock"}; None when already done).
    """

    template_fields = ("session", "provider")
    ui_color = "#f8e3c4"

    def __init__(self, *, provider: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.provider = provider

    def execute(self, context: Context) -> dict[str, Any]:
        p = self.provider
        consumer = self.consumer
        agreement = consumer.create_compute_agreement(
            consumer.agreement_seed(f"{self.session_id}/{p['did']}", p["address"]),
            p["did"],
            p["address"],
            p["price"],
            time_out=self.conf["refund_after_blocks"],
        )
        lock_tx = consumer.lock_payment(agreement)
        self.log.info(
            "%s %s (%s): agreement %s, %d locked (tx %s)",
            p["role"],
            p["name"],
            p["did"],
            agreement.agreement_id,
            p["price"],
            lock_tx or "none: already locked",
        )
        return {
            "name": p["name"],
            "role": p["role"],
            "did": p["did"],
            "provider": p["address"],
            "price": p["price"],
            "endpoint": p["endpoint"],
            "agreement": agreement.to_dict(),
            "tx_hashes": {"agreement": agreement.tx_hash, "lock": lock_tx},
        }


def refund(consumer_conn_id: str, payment: dict[str, Any]) -> str | None:
    """Consumer's refund of an unreleased payment, where the contracts allow it now."""
    return nevermined(consumer_conn_id).refund(payment["agreement"])
