"""The keeper's compute agreements: terms and ids, creation, condition states, the provider's check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from web3 import Web3

from airflow_nevermined_fl.contracts.did_registry import DidRegistryMixin
from airflow_nevermined_fl.contracts.errors import InvalidInputError, StateError, UnknownAgreementError
from airflow_nevermined_fl.contracts.records import ComputeAgreement
from airflow_nevermined_fl.contracts.values import (
    address_of,
    bytes32,
    did_bytes,
    did_str,
    hex_str,
    keccak_abi,
    non_negative_blocks,
    positive_amounts,
    seed_id,
)

CONDITION_STATES = ("uninitialized", "unfulfilled", "fulfilled", "aborted")


class ConditionTerms(NamedTuple):
    """A condition's on-chain time terms, in blocks."""

    time_lock: int
    time_out: int
    created: int


class AgreementsMixin(DidRegistryMixin):
    """EscrowComputeExecutionTemplate agreements (compute, lock, escrow conditions) and token balances."""

    @staticmethod
    def agreement_seed(session_id: str, provider: str) -> str:
        """Agreement seed for one session and provider (same inputs, same seed: Airflow retries are safe)."""
        provider = address_of(provider, "provider")
        return hex_str(Web3.keccak(text=f"nvfl/agreement/{session_id}/{provider.lower()}"))

    def create_compute_agreement(
        self,
        seed: str | bytes,
        did: str | bytes,
        provider: str,
        amount: int | Sequence[int],
        receivers: Sequence[str] | None = None,
        time_lock: int = 0,
        time_out: int = 0,
    ) -> ComputeAgreement:
        """Create the compute agreement from this (consumer) account.

        ``amount`` (or one per receiver) is paid to ``receivers`` (default: the provider) out of escrow.
        ``time_out`` (blocks, 0 = never) bounds the compute condition: after it the consumer can
        :meth:`refund`. ``time_lock`` (blocks) delays the escrow release.
        """
        seed_b = bytes32(seed, "seed")
        did_b = did_bytes(did)
        provider = address_of(provider, "provider")
        amounts = positive_amounts(amount)
        receiver_list = [provider] if receivers is None else [address_of(r, "receivers[]") for r in receivers]
        if len(receiver_list) != len(amounts):
            raise InvalidInputError(
                f"amounts/receivers: {len(amounts)} amounts but {len(receiver_list)} receivers;"
                " expected equal lengths"
            )
        time_lock = non_negative_blocks(time_lock, "time_lock")
        time_out = non_negative_blocks(time_out, "time_out")
        record = self.get_did(did_b)
        if provider != record.owner and provider not in record.providers:
            raise InvalidInputError(f"provider: {provider} is neither owner nor a provider of {record.did}")
        agreement = self._agreement(
            seed_b, did_b, self.address, provider, amounts, receiver_list, time_lock, time_out
        )
        asm = self._c("AgreementStoreManager")
        if int(asm.functions.getAgreementTemplate(bytes32(agreement.agreement_id, "id")).call(), 16) != 0:
            if self._condition_state(agreement.lock_condition_id) == "uninitialized":
                raise InvalidInputError(
                    f"seed: agreement {agreement.agreement_id} exists with different terms"
                )
            return agreement
        self._require_balance(agreement.consumer, agreement.total)
        tx_hash = self._tx(
            "EscrowComputeExecutionTemplate",
            "createAgreement",
            seed_b,
            did_b,
            [self._condition_hashes(agreement)[n] for n in ("compute", "lock", "escrow")],
            [0, 0, time_lock],
            [time_out, 0, 0],
            agreement.consumer,
        )
        return ComputeAgreement(**{**agreement.to_dict(), "tx_hash": tx_hash})

    def _agreement(
        self,
        seed: bytes,
        did: bytes,
        consumer: str,
        provider: str,
        amounts: list[int],
        receivers: list[str],
        time_lock: int,
        time_out: int,
    ) -> ComputeAgreement:
        """Ids exactly as the template derives them (agreement id from seed + creator, full condition ids)."""
        draft = ComputeAgreement(
            agreement_id=hex_str(seed_id(seed, consumer)),
            seed=hex_str(seed),
            did=did_str(did),
            consumer=consumer,
            provider=provider,
            amounts=amounts,
            receivers=receivers,
            token=self._addr("NeverminedToken"),
            escrow=self._addr("EscrowPaymentCondition"),
            compute_condition_id="",
            lock_condition_id="",
            escrow_condition_id="",
            time_lock=time_lock,
            time_out=time_out,
        )
        ids = self._condition_ids(draft)
        return ComputeAgreement(
            **{
                **draft.to_dict(),
                "compute_condition_id": ids["compute"],
                "lock_condition_id": ids["lock"],
                "escrow_condition_id": ids["escrow"],
            }
        )

    def _condition_hashes(self, a: ComputeAgreement) -> dict[str, bytes]:
        did = did_bytes(a.did)
        agreement_id = bytes32(a.agreement_id, "agreement_id")
        compute_hash = keccak_abi(["bytes32", "address"], [did, a.consumer])
        lock_hash = keccak_abi(
            ["bytes32", "address", "address", "uint256[]", "address[]"],
            [did, a.escrow, a.token, a.amounts, a.receivers],
        )
        compute_id = self._full_id(agreement_id, "ComputeExecutionCondition", compute_hash)
        lock_id = self._full_id(agreement_id, "LockPaymentCondition", lock_hash)
        escrow_hash = keccak_abi(
            ["bytes32", "uint256[]", "address[]", "address", "address", "address", "bytes32", "bytes32[]"],
            [did, a.amounts, a.receivers, a.consumer, a.escrow, a.token, lock_id, [compute_id]],
        )
        return {"compute": compute_hash, "lock": lock_hash, "escrow": escrow_hash}

    def _full_id(self, agreement_id: bytes, condition: str, value_hash: bytes) -> bytes:
        return keccak_abi(
            ["bytes32", "address", "bytes32"], [agreement_id, self._addr(condition), value_hash]
        )

    def _condition_ids(self, a: ComputeAgreement) -> dict[str, str]:
        hashes = self._condition_hashes(a)
        agreement_id = bytes32(a.agreement_id, "agreement_id")
        contract = {
            "compute": "ComputeExecutionCondition",
            "lock": "LockPaymentCondition",
            "escrow": "EscrowPaymentCondition",
        }
        return {k: hex_str(self._full_id(agreement_id, contract[k], h)) for k, h in hashes.items()}

    def _checked(self, agreement: ComputeAgreement | dict[str, Any]) -> ComputeAgreement:
        """Accept an agreement (or its dict from XCom), verify its ids and that it exists on this chain."""
        a = agreement if isinstance(agreement, ComputeAgreement) else ComputeAgreement.from_dict(agreement)
        expected = self._agreement(
            bytes32(a.seed, "agreement.seed"),
            did_bytes(a.did, "agreement.did"),
            address_of(a.consumer, "agreement.consumer"),
            address_of(a.provider, "agreement.provider"),
            positive_amounts(a.amounts),
            [address_of(r, "agreement.receivers[]") for r in a.receivers],
            a.time_lock,
            a.time_out,
        )
        if expected.to_dict() | {"tx_hash": None} != a.to_dict() | {"tx_hash": None}:
            raise InvalidInputError("agreement: ids do not match its terms or this deployment")
        if self._condition_state(a.lock_condition_id) == "uninitialized":
            raise UnknownAgreementError(f"agreement: {a.agreement_id} does not exist on this chain")
        return a

    def _condition_state(self, condition_id: str) -> str:
        state = (
            self._c("ConditionStoreManager").functions.getConditionState(bytes32(condition_id, "id")).call()
        )
        return CONDITION_STATES[state]

    def _timed_out(self, condition_id: str) -> bool:
        return bool(
            self._c("ConditionStoreManager").functions.isConditionTimedOut(bytes32(condition_id, "id")).call()
        )

    def condition_states(self, agreement: ComputeAgreement | dict[str, Any]) -> dict[str, str]:
        """``{"compute"|"lock"|"escrow": "unfulfilled"|"fulfilled"|"aborted"}``."""
        a = self._checked(agreement)
        return {
            "compute": self._condition_state(a.compute_condition_id),
            "lock": self._condition_state(a.lock_condition_id),
            "escrow": self._condition_state(a.escrow_condition_id),
        }

    def verify_compute_agreement(
        self,
        agreement: ComputeAgreement | dict[str, Any],
        *,
        consumer: str,
        did: str,
        amount: int | None,
        min_blocks_left: int = 1,
    ) -> ComputeAgreement:
        """A provider's check before it computes: the agreement exists under the compute template with
        these terms (``consumer``; ``did``; ``amount`` paid to this account alone, unless ``amount`` is
        None: another provider's agreement), its payment is locked, its compute condition is open (not
        fulfilled, aborted or timed out) with at least ``min_blocks_left`` blocks before it times out, and
        its conditions' time locks and time-outs, read on chain, let the provider be paid (:meth:`terms`)."""
        a = self._checked(agreement)
        template = self._c("AgreementStoreManager").functions.getAgreementTemplate(
            bytes32(a.agreement_id, "agreement_id")
        )
        if template.call() != self._addr("EscrowComputeExecutionTemplate"):
            raise InvalidInputError(f"agreement: {a.agreement_id} does not use the compute template")
        if a.consumer != address_of(consumer, "consumer"):
            raise InvalidInputError(f"agreement.consumer: {a.consumer} is not the caller {consumer}")
        if did_bytes(a.did) != did_bytes(did):
            raise InvalidInputError(f"agreement.did: {a.did} is not this provider's asset {did}")
        if amount is not None and (a.provider, a.receivers, a.amounts) != (
            self.address,
            [self.address],
            [amount],
        ):
            raise InvalidInputError(
                f"agreement: pays {a.amounts} to {a.receivers}; expected [{amount}] to [{self.address}]"
            )
        states = self.condition_states(a)
        if states["lock"] != "fulfilled":
            raise StateError(f"payment for {a.agreement_id} is not locked (lock condition {states['lock']})")
        if states["compute"] != "unfulfilled" or self._timed_out(a.compute_condition_id):
            state = "timed out" if states["compute"] == "unfulfilled" else states["compute"]
            raise StateError(f"compute of {a.agreement_id} is {state}: nothing to execute")
        left = self.blocks_left(a)
        if left < min_blocks_left:
            raise StateError(
                f"compute of {a.agreement_id} times out in {left} blocks, before the session could end "
                f"({min_blocks_left} blocks needed): the consumer could refund finished work"
            )
        return a

    def blocks_left(self, agreement: ComputeAgreement | dict[str, Any]) -> int:
        """Blocks before the agreement's compute condition times out (after them the consumer may refund),
        once its conditions' on-chain terms are checked: a compute time-out (0 never refundable, a
        stranded payment), no compute time lock (it would hold the provider's fulfilment), an escrow
        without time-out and a release delay no longer than the compute time-out (``StateError``)."""
        a = self._checked(agreement)
        compute = self._condition(a.compute_condition_id)
        escrow = self._condition(a.escrow_condition_id)
        refused = None
        if compute.time_out == 0:
            refused = "compute time-out 0: never refundable, a failed provider would strand the payment"
        elif compute.time_lock:
            refused = f"compute time lock {compute.time_lock} blocks: the provider could not settle before"
        elif escrow.time_out:
            refused = f"escrow time-out {escrow.time_out} blocks: the release could be aborted"
        elif escrow.time_lock > compute.time_out:
            refused = (
                f"escrow time lock {escrow.time_lock} blocks, longer than the compute time-out "
                f"{compute.time_out}: the provider's payment would be held"
            )
        if refused:
            raise StateError(f"agreement {a.agreement_id}: {refused}")
        current = int(self._c("ConditionStoreManager").functions.getCurrentBlockNumber().call())
        return compute.created + compute.time_out - current

    def refund_block(self, agreement: ComputeAgreement | dict[str, Any]) -> int | None:
        """The last block before the agreement's compute condition times out (a refund is possible from
        the next one on); None when it never does (time_out 0)."""
        time_out, created = self._compute_time_out(self._checked(agreement))
        return created + time_out if time_out else None

    def _condition(self, condition_id: str) -> ConditionTerms:
        """A condition's time lock, time-out and creation block, as stored on chain."""
        stored = self._c("ConditionStoreManager").functions.getCondition(bytes32(condition_id, "id")).call()
        _, _, time_lock, time_out, created = stored
        return ConditionTerms(int(time_lock), int(time_out), int(created))

    def _compute_time_out(self, a: ComputeAgreement) -> tuple[int, int]:
        """``(time_out, created block)`` of the agreement's compute condition, as stored on chain."""
        compute = self._condition(a.compute_condition_id)
        return compute.time_out, compute.created

    def token_balance(self, address: str) -> int:
        return int(self._c("NeverminedToken").functions.balanceOf(address_of(address, "address")).call())

    def _require_balance(self, owner: str, needed: int) -> None:
        balance = self.token_balance(owner)
        if balance < needed:
            has, needs = self.token.format(balance), self.token.format(needed)
            raise InvalidInputError(f"amounts: insufficient token balance: {owner} has {has}, needs {needs}")
