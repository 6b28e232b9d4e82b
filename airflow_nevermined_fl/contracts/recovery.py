"""A consumer's compute agreements read back from the chain alone (no local ledger), and their refunds.

For when the consumer's Airflow run is gone: every payment locked but never released is found from events
and refunded once its compute condition timed out. What Nevermined 3.5.9 leaves on chain:

* EscrowComputeExecutionTemplate's ``AgreementCreated`` (declared in BaseEscrowTemplate): agreement id
  (indexed), DID, ``_accessConsumer`` (indexed: the consumer is the log filter), time locks and outs,
  condition value hashes and full ids, the seed and ``_creator`` (not indexed: checked here). Its indexed
  ``_accessProvider`` is never set (always the zero address), and the AgreementStoreManager emits no event.
* LockPaymentCondition's ``Fulfilled``: agreement id, DID and condition id (indexed), escrow address,
  token, receivers and amounts: the terms the payment was locked with.

The provider is not on chain: it is the first receiver that owns or provides the DID (else the first
receiver; for an agreement never locked, the DID's first provider or its owner). It takes no part in the
condition ids. A locked agreement is rebuilt as the :class:`ComputeAgreement` its lock used, its three
condition ids checked against the event's, so :meth:`~.escrow.EscrowMixin.refund` computes the same ids.

Logs are read in ranges of ``block_chunk`` blocks (a range the node refuses is split in halves) from
``from_block`` to one block read at the start; every state is read at that same block.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from web3.exceptions import Web3RPCError

from airflow_nevermined_fl.contracts.agreements import CONDITION_STATES
from airflow_nevermined_fl.contracts.errors import (
    InvalidInputError,
    PendingTransactionError,
    ReceiptTimeoutError,
    StateError,
    TxRevertedError,
)
from airflow_nevermined_fl.contracts.records import ComputeAgreement
from airflow_nevermined_fl.contracts.values import address_of, did_str, hex_str, non_negative_blocks

if TYPE_CHECKING:
    from web3.contract.contract import ContractEvent
    from web3.types import EventData

    from airflow_nevermined_fl.contracts.escrow import EscrowMixin

LOG_BLOCK_CHUNK = 10_000
ID_BATCH = 100  # agreement ids OR-ed in one log filter
CONDITIONS = ("compute", "lock", "escrow")  # the template's condition order
STATUSES = ("released", "refunded", "refund_due", "waiting", "computed", "not_locked", "unknown")
SETTLED = ("released", "refunded")


@dataclass(frozen=True)
class ChainAgreement:
    """One of the consumer's agreements as the chain shows it at ``current_block``.

    ``status``: ``released`` (paid to the receivers), ``refunded`` (back to the consumer), ``refund_due``
    (locked, escrow open, compute timed out or aborted: :func:`refund_due_agreements` returns it now),
    ``waiting`` (locked, compute open: refundable after ``due_after_block``, never when that is None,
    i.e. ``time_out`` 0), ``computed`` (compute fulfilled, escrow not yet released: it belongs to the
    receivers), ``not_locked`` (nothing paid), ``unknown`` (a state combination the template cannot
    reach). ``amount``, ``amounts``, ``receivers`` and ``token`` come from the lock (None: never locked):
    ``amount`` is their total in token units (a plain decimal string), ``amounts`` the lock's terms in base
    units. ``agreement`` is None when not locked, or when the lock's terms do not rebuild its ids (``note``).
    """

    agreement_id: str
    did: str
    consumer: str
    provider: str
    amount: str | None
    amounts: list[int] | None
    receivers: list[str] | None
    token: str | None
    condition_states: dict[str, str]
    status: str
    created_block: int
    time_out: int
    due_after_block: int | None
    current_block: int
    agreement: ComputeAgreement | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RefundReport:
    """Result of :func:`refund_due_agreements`: every agreement (after the refunds) and what was sent;
    amounts in tokens of ``symbol``."""

    consumer: str
    symbol: str
    chain_id: int
    from_block: int
    current_block: int
    dry_run: bool
    agreements: list[ChainAgreement]
    refunded: list[dict[str, Any]] = field(default_factory=list)  # agreement_id, amount, tx_hash
    failed: list[dict[str, Any]] = field(default_factory=list)  # agreement_id, amount, error

    @property
    def due(self) -> list[ChainAgreement]:
        """Agreements still refundable now (with ``dry_run``: the ones a real run would refund)."""
        return [a for a in self.agreements if a.status == "refund_due"]

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "agreements"},
            "agreements": [a.to_dict() for a in self.agreements],
            "counts": dict(Counter(a.status for a in self.agreements)),
            "due": [a.agreement_id for a in self.due],
        }


@dataclass(frozen=True)
class _Found:
    """An agreement's creation event and, once found, its lock event."""

    created: EventData
    lock: EventData | None = None


def block_ranges(start: int, end: int, chunk: int) -> Iterator[tuple[int, int]]:
    """``[start, end]`` in consecutive inclusive ranges of at most ``chunk`` blocks."""
    while start <= end:
        yield start, min(start + chunk - 1, end)
        start += chunk


def _logs(event: ContractEvent, filters: dict[str, Any], start: int, end: int) -> list[EventData]:
    """Logs of ``event`` in ``[start, end]``; a range the node refuses (too many results) is halved."""
    try:
        return list(event.get_logs(argument_filters=filters, from_block=start, to_block=end))
    except Web3RPCError:
        if start == end:
            raise
        middle = (start + end) // 2
        return _logs(event, filters, start, middle) + _logs(event, filters, middle + 1, end)


def _scan(
    keeper: EscrowMixin, consumer: str, from_block: int, to_block: int, block_chunk: int
) -> dict[str, _Found]:
    """The consumer's agreements (created and made by it) in the range, with their lock events."""
    created = keeper._c("EscrowComputeExecutionTemplate").events.AgreementCreated
    found: dict[str, _Found] = {}
    for start, end in block_ranges(from_block, to_block, block_chunk):
        for log in _logs(created, {"_accessConsumer": consumer}, start, end):
            args = log["args"]
            # Anyone can name this consumer in an agreement; its own have it as creator too.
            if args["_creator"] == consumer and len(args["_conditionIds"]) == len(CONDITIONS):
                found[hex_str(args["_agreementId"])] = _Found(log)
    # Only a fulfilled lock has an event: the scan for them stops once each is found.
    store = keeper._c("ConditionStoreManager").functions
    pending = {
        agreement_id: f
        for agreement_id, f in found.items()
        if store.getConditionState(f.created["args"]["_conditionIds"][1]).call(block_identifier=to_block)
        == CONDITION_STATES.index("fulfilled")
    }
    if not pending:
        return found
    fulfilled = keeper._c("LockPaymentCondition").events.Fulfilled
    first = min(f.created["blockNumber"] for f in pending.values())
    for start, end in block_ranges(first, to_block, block_chunk):
        ids = [bytes.fromhex(i[2:]) for i in pending]
        for batch in (ids[i : i + ID_BATCH] for i in range(0, len(ids), ID_BATCH)):
            for log in _logs(fulfilled, {"_agreementId": batch}, start, end):
                agreement_id = hex_str(log["args"]["_agreementId"])
                entry = pending.get(agreement_id)
                if entry and log["args"]["_conditionId"] == entry.created["args"]["_conditionIds"][1]:
                    found[agreement_id] = _Found(entry.created, log)
                    del pending[agreement_id]
        if not pending:
            break
    return found


def payment_status(states: dict[str, str], timed_out: bool) -> str:
    """What an agreement's payment is, from its condition states and whether its compute timed out:
    ``not_locked``, ``released``, ``refunded``, ``refund_due``, ``waiting``, ``computed`` (the provider
    may still release) or ``unknown``."""
    lock, compute, escrow = (states[n] for n in ("lock", "compute", "escrow"))
    if lock != "fulfilled":
        return "not_locked"
    if escrow == "fulfilled":
        return {"fulfilled": "released", "aborted": "refunded"}.get(compute, "unknown")
    if escrow != "unfulfilled":
        return "unknown"
    if compute == "aborted" or (compute == "unfulfilled" and timed_out):
        return "refund_due"
    return {"unfulfilled": "waiting", "fulfilled": "computed"}.get(compute, "unknown")


def _provider(keeper: EscrowMixin, did: bytes, receivers: list[str] | None, block: int) -> str:
    owner, _, _, _, _, providers, *_ = (
        keeper._c("DIDRegistry").functions.getDIDRegister(did).call(block_identifier=block)
    )
    if receivers:
        return next((r for r in receivers if r == owner or r in providers), receivers[0])
    return providers[0] if providers else owner


def _assess(keeper: EscrowMixin, consumer: str, found: _Found, block: int) -> ChainAgreement:
    """The agreement's states at ``block``, its status, and its terms rebuilt from the lock event."""
    args = found.created["args"]
    store = keeper._c("ConditionStoreManager").functions
    ids = dict(zip(CONDITIONS, args["_conditionIds"], strict=True))
    conditions = {n: store.getCondition(i).call(block_identifier=block) for n, i in ids.items()}
    states = {n: CONDITION_STATES[c[1]] for n, c in conditions.items()}
    _, _, _, time_out, created_block = conditions["compute"]
    timed_out = bool(store.isConditionTimedOut(ids["compute"]).call(block_identifier=block))
    lock = found.lock["args"] if found.lock else None
    receivers = list(lock["_receivers"]) if lock else None
    amounts = list(lock["_amounts"]) if lock else None
    provider = _provider(keeper, args["_did"], receivers, block)
    agreement, note = None, ""
    if lock and amounts and receivers:
        agreement = keeper._agreement(
            args["_idSeed"],
            args["_did"],
            consumer,
            provider,
            amounts,
            receivers,
            conditions["escrow"][2],
            time_out,
        )
        tx_hash = found.created["transactionHash"].to_0x_hex()
        agreement = ComputeAgreement(**{**agreement.to_dict(), "tx_hash": tx_hash})
        rebuilt = [agreement.agreement_id] + [getattr(agreement, f"{n}_condition_id") for n in CONDITIONS]
        if rebuilt != [hex_str(i) for i in (args["_agreementId"], *args["_conditionIds"])]:
            agreement, note = None, "the lock's terms do not rebuild the condition ids (not made by nvfl?)"
    elif states["lock"] == "fulfilled":
        note = "lock fulfilled but its Fulfilled event is not in the scanned blocks"
    status = payment_status(states, timed_out)
    return ChainAgreement(
        agreement_id=hex_str(args["_agreementId"]),
        did=did_str(args["_did"]),
        consumer=consumer,
        provider=provider,
        amount=keeper.token.text(sum(amounts)) if amounts else None,
        amounts=amounts,
        receivers=receivers,
        token=lock["_tokenAddress"] if lock else None,
        condition_states=states,
        status=status,
        created_block=created_block,
        time_out=time_out,
        due_after_block=created_block + time_out if time_out else None,
        current_block=block,
        agreement=agreement,
        note=note,
    )


def _consumer_and_range(keeper: EscrowMixin, consumer: str | None, from_block: int, block_chunk: int) -> str:
    non_negative_blocks(from_block, "from_block")
    if isinstance(block_chunk, bool) or not isinstance(block_chunk, int) or block_chunk < 1:
        raise InvalidInputError(f"block_chunk: expected a positive integer, got {block_chunk!r}")
    return keeper.address if consumer is None else address_of(consumer, "consumer")


def _list(
    keeper: EscrowMixin, consumer: str, from_block: int, block_chunk: int
) -> tuple[int, list[tuple[_Found, ChainAgreement]]]:
    block = int(keeper.get_conn().w3.eth.block_number)
    found = _scan(keeper, consumer, from_block, block, block_chunk) if from_block <= block else {}
    ordered = sorted(found.values(), key=lambda f: (f.created["blockNumber"], f.created["logIndex"]))
    return block, [(f, _assess(keeper, consumer, f, block)) for f in ordered]


def consumer_agreements(
    keeper: EscrowMixin,
    consumer: str | None = None,
    *,
    from_block: int = 0,
    block_chunk: int = LOG_BLOCK_CHUNK,
) -> list[ChainAgreement]:
    """Every EscrowComputeExecutionTemplate agreement ``consumer`` (default: the keeper's account) created
    from block ``from_block`` on, oldest first, with its states and status at the current block."""
    consumer = _consumer_and_range(keeper, consumer, from_block, block_chunk)
    return [a for _, a in _list(keeper, consumer, from_block, block_chunk)[1]]


def refund_due_agreements(
    keeper: EscrowMixin,
    *,
    from_block: int = 0,
    dry_run: bool = False,
    block_chunk: int = LOG_BLOCK_CHUNK,
) -> RefundReport:
    """Refund every agreement of the keeper's account (the consumer) that is ``refund_due`` now.

    Idempotent: a refunded agreement is ``refunded`` on the next run, which sends nothing. ``dry_run``
    sends no transaction. An agreement whose refund fails (its terms not rebuilt, a revert) is listed in
    ``failed`` and stays ``refund_due``; the others are still refunded.
    """
    consumer = _consumer_and_range(keeper, None, from_block, block_chunk)
    block, listed = _list(keeper, consumer, from_block, block_chunk)
    agreements, symbol = [a for _, a in listed], keeper.token.symbol
    refunded: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    touched: dict[str, _Found] = {}
    due = [] if dry_run else [(found, entry) for found, entry in listed if entry.status == "refund_due"]
    for found, entry in due:
        if entry.agreement is None:
            failed.append(_failure(entry, entry.note or "terms not rebuilt from the chain"))
            continue
        try:
            tx_hash = keeper.refund(entry.agreement)
        except (
            StateError,
            TxRevertedError,
            ReceiptTimeoutError,
            PendingTransactionError,
            InvalidInputError,
        ) as exc:
            failed.append(_failure(entry, str(exc)))  # a later run finds it done or refunds it
            continue
        keeper.log.info("refunded %s (%s %s) in tx %s", entry.agreement_id, entry.amount, symbol, tx_hash)
        refunded.append({"agreement_id": entry.agreement_id, "amount": entry.amount, "tx_hash": tx_hash})
        touched[entry.agreement_id] = found
    if touched:  # their states after the refunds
        after = int(keeper.get_conn().w3.eth.block_number)
        agreements = [
            _assess(keeper, consumer, touched[a.agreement_id], after) if a.agreement_id in touched else a
            for a in agreements
        ]
    return RefundReport(
        consumer=consumer,
        symbol=symbol,
        chain_id=int(keeper.get_conn().w3.eth.chain_id),
        from_block=from_block,
        current_block=block,
        dry_run=dry_run,
        agreements=agreements,
        refunded=refunded,
        failed=failed,
    )


def _failure(entry: ChainAgreement, error: str) -> dict[str, Any]:
    return {"agreement_id": entry.agreement_id, "amount": entry.amount, "error": error}


def open_agreements(agreements: Sequence[ChainAgreement]) -> list[ChainAgreement]:
    """The agreements neither released nor refunded."""
    return [a for a in agreements if a.status not in SETTLED]
