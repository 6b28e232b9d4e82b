"""The keeper's escrow steps of a compute agreement: lock the payment, fulfill compute, release or refund."""

from __future__ import annotations

from typing import Any

from airflow_nevermined_fl.contracts.agreements import AgreementsMixin
from airflow_nevermined_fl.contracts.errors import InvalidInputError, StateError
from airflow_nevermined_fl.contracts.records import ComputeAgreement
from airflow_nevermined_fl.contracts.values import bytes32, did_bytes


class EscrowMixin(AgreementsMixin):
    """Move a compute agreement's payment: consumer locks it, provider computes, anyone releases it."""

    def _fulfill(self, condition: str, a: ComputeAgreement, *args: Any) -> str:
        """Send ``condition.fulfill(agreement id, did, *args)``."""
        return self._tx(condition, "fulfill", bytes32(a.agreement_id, "id"), did_bytes(a.did), *args)

    def lock_payment(self, agreement: ComputeAgreement | dict[str, Any]) -> str | None:
        """Approve the tokens and fulfill LockPaymentCondition (consumer's hook). None when already locked.

        Check, approve and fulfill run under the account lock: a concurrent lock of another agreement
        cannot spend this approval, and a retry approves only when the allowance is below this total."""
        a = self._checked(agreement)
        if a.consumer != self.address:
            raise InvalidInputError(f"agreement.consumer: {a.consumer} is not this connection's account")
        with self.account_lock():
            return self._lock_payment(a)

    def _lock_payment(self, a: ComputeAgreement) -> str | None:
        states = self.condition_states(a)
        if states["lock"] == "fulfilled":
            return None
        if states["lock"] != "unfulfilled":
            raise StateError(f"lock condition of {a.agreement_id} is {states['lock']}")
        self._require_balance(a.consumer, a.total)
        token, lock = self._c("NeverminedToken"), self._addr("LockPaymentCondition")
        if token.functions.allowance(a.consumer, lock).call() < a.total:
            self._tx("NeverminedToken", "approve", lock, a.total)
        return self._fulfill("LockPaymentCondition", a, a.escrow, a.token, a.amounts, a.receivers)

    def fulfill_compute(self, agreement: ComputeAgreement | dict[str, Any]) -> str | None:
        """Fulfill ComputeExecutionCondition (provider's hook) once payment is locked; None when done."""
        a = self._checked(agreement)
        states = self.condition_states(a)
        if states["compute"] == "fulfilled":
            return None
        if states["compute"] != "unfulfilled":
            raise StateError(f"compute condition of {a.agreement_id} is {states['compute']}")
        if states["lock"] != "fulfilled":
            raise StateError(f"payment for {a.agreement_id} is not locked: refusing to start compute")
        if self._timed_out(a.compute_condition_id):
            raise StateError(f"compute of {a.agreement_id} timed out: the consumer can only refund it")
        did = self.get_did(a.did)
        if self.address != did.owner and self.address not in did.providers:
            raise InvalidInputError(
                f"agreement.did: {self.address} is neither owner nor provider of {did.did}"
            )
        return self._fulfill("ComputeExecutionCondition", a, a.consumer)

    def _escrow_fulfill(self, a: ComputeAgreement) -> str:
        cond = self._c("ConditionStoreManager").functions
        if cond.isConditionTimeLocked(bytes32(a.escrow_condition_id, "id")).call():
            _, _, time_lock, _, created = cond.getCondition(bytes32(a.escrow_condition_id, "id")).call()
            raise StateError(
                f"escrow of {a.agreement_id} is time-locked until block {created + time_lock}"
                f" (now {self.get_conn().w3.eth.block_number})"
            )
        return self._fulfill(
            "EscrowPaymentCondition",
            a,
            a.amounts,
            a.receivers,
            a.consumer,
            a.escrow,
            a.token,
            bytes32(a.lock_condition_id, "id"),
            bytes32(a.compute_condition_id, "id"),
        )

    def release_escrow(self, agreement: ComputeAgreement | dict[str, Any]) -> str | None:
        """Pay the receivers out of escrow once compute is fulfilled (any account). None when already done."""
        a = self._checked(agreement)
        states = self.condition_states(a)
        if states["escrow"] != "unfulfilled":
            if states["compute"] == "fulfilled":
                return None
            raise StateError(
                f"escrow of {a.agreement_id} is {states['escrow']} without compute: it was refunded"
            )
        if states["lock"] != "fulfilled":
            raise StateError(f"payment for {a.agreement_id} is not locked: nothing to release")
        if states["compute"] != "fulfilled":
            raise StateError(
                f"compute of {a.agreement_id} is {states['compute']}: release needs it fulfilled"
            )
        return self._escrow_fulfill(a)

    def refund(self, agreement: ComputeAgreement | dict[str, Any]) -> str | None:
        """Abort the timed-out compute condition and return the escrow to the consumer. None when refunded."""
        a = self._checked(agreement)
        states = self.condition_states(a)
        if states["escrow"] != "unfulfilled":
            if states["compute"] == "aborted":
                return None
            raise StateError(f"escrow of {a.agreement_id} was already released to the receivers")
        if states["lock"] != "fulfilled":
            raise StateError(f"payment for {a.agreement_id} is not locked: nothing to refund")
        if states["compute"] == "fulfilled":
            raise StateError(f"compute of {a.agreement_id} is fulfilled: release the escrow instead")
        if states["compute"] == "unfulfilled":
            compute_id = bytes32(a.compute_condition_id, "id")
            if not self._timed_out(a.compute_condition_id):
                time_out, created = self._compute_time_out(a)
                limit = f"after block {created + time_out}" if time_out else "never (time_out=0)"
                raise StateError(
                    f"compute of {a.agreement_id} has not timed out: refund possible {limit}"
                    f" (now {self.get_conn().w3.eth.block_number})"
                )
            self._tx("ComputeExecutionCondition", "abortByTimeOut", compute_id)
        return self._escrow_fulfill(a)
