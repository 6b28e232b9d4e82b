"""Payments: the consumer locks each provider's price in escrow; refunds of work not done.

The provider's gateway, not the consumer, fulfils the compute condition and releases its escrow once its
work is done; the consumer never holds a provider's key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.contracts.timeouts import compute_time_out
from airflow_nevermined_fl.links import LockTransactionLink
from airflow_nevermined_fl.operators.base import SessionOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook


class LockPaymentOperator(SessionOperator):
    """Consumer locks one provider's price (from its asset DDO, in token units; the agreement's amount in
    base units by the token's decimals) in escrow: an EscrowComputeExecutionTemplate agreement on the
    provider's asset DID, paying the provider's address. Its compute time-out (after which the consumer
    may refund) is the session's ``session_timeout`` and a margin, in the chain's blocks.

    Mapped over the data providers (and once for the coordinator). Every step reads the chain first: a
    retry creates no second agreement and locks nothing twice.

    Output: ``name``, ``role``, ``did``, ``provider`` (address), ``price`` (tokens), ``endpoint`` (gateway),
    ``agreement``, ``tx_hashes`` ({"agreement", "lock"}; None when already done).
    """

    template_fields = ("session", "provider")
    ui_color = "#f8e3c4"
    operator_extra_links = (LockTransactionLink(),)

    def __init__(self, *, provider: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.provider = provider

    def execute(self, context: Context) -> dict[str, Any]:
        p = self.provider
        consumer = self.consumer
        amount = consumer.token.base(p["price"], f"{p['name']}'s price")
        agreement = consumer.create_compute_agreement(
            consumer.agreement_seed(f"{self.session_id}/{p['did']}", p["address"]),
            p["did"],
            p["address"],
            amount,
            time_out=compute_time_out(self.conf["session_timeout"], consumer.block_time),
        )
        lock_tx = consumer.lock_payment(agreement)
        self.log.info(
            "%s %s (%s): agreement %s, %s locked (tx %s)",
            p["role"],
            p["name"],
            p["did"],
            agreement.agreement_id,
            consumer.token.format(amount),
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


def refund_due(
    consumer: NeverminedHook, payments: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Refund each of ``payments`` that the chain allows now: ``(outcome by provider name, {name: block
    after which its refund is due})`` for those still waiting on their compute time-out. Outcomes: the
    payment's status (:func:`~..contracts.recovery.payment_status`; ``refunded`` with its tx when refunded
    here), or ``error`` (the RPC, or a time-out that never passes)."""
    from airflow_nevermined_fl.contracts.errors import ChainError
    from airflow_nevermined_fl.contracts.keeper import payment_status

    outcomes: dict[str, dict[str, Any]] = {}
    waiting: dict[str, int] = {}
    for payment in payments:
        name, agreement = payment["name"], payment["agreement"]
        try:
            due = consumer.refund_block(agreement)
            timed_out = due is not None and consumer.get_conn().w3.eth.block_number > due
            status = payment_status(consumer.condition_states(agreement), timed_out)
            if status == "refund_due":
                outcome = {"outcome": "refunded", "tx_hash": consumer.refund(agreement)}
            elif status == "waiting" and due is None:
                outcome = {"outcome": "error", "error": "its compute never times out (time_out 0)"}
            elif status == "waiting":
                waiting[name] = due
                outcome = {"outcome": "waiting", "after_block": due}
            else:
                outcome = {"outcome": status}
        except ChainError as err:
            outcome = {"outcome": "error", "error": str(err)}
        outcomes[name] = outcome
    return outcomes, waiting
