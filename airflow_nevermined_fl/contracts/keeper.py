"""Keeper: one actor's account on a chain running the Nevermined contracts (no Airflow).

Every step reads chain state first, so re-running it after it succeeded sends no transaction and returns
the same result (``tx_hash`` None). Bad input raises :class:`InvalidInputError` before any transaction; a
step the chain state does not allow (yet) raises :class:`StateError`; a revert raises
:class:`TxRevertedError` naming contract, function and reason.

One account's transactions never overlap between the processes of one host: each transaction, and the
consumer's check-approve-lock sequence as a whole, holds the account's file lock
(:mod:`~airflow_nevermined_fl.contracts.account_lock`), so tasks of one actor may run in parallel there.
Workers on several hosts sharing one account need an Airflow pool of one slot per actor instead.

The consumer's Airflow uses it through :class:`~airflow_nevermined_fl.hooks.nevermined.NeverminedHook`
(settings from a connection); a provider's gateway builds it from its own config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from eth_abi import encode
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from airflow_nevermined_fl.contracts.account_lock import account_lock
from airflow_nevermined_fl.contracts.client import Signer, account_from_key, connect
from airflow_nevermined_fl.contracts.deployment import Deployment
from airflow_nevermined_fl.contracts.errors import ChainError, DeploymentError, InvalidInputError

HOOK_CONTRACTS: tuple[str, ...] = (
    "NeverminedConfig",
    "NeverminedToken",
    "DIDRegistry",
    "ConditionStoreManager",
    "AgreementStoreManager",
    "LockPaymentCondition",
    "EscrowPaymentCondition",
    "ComputeExecutionCondition",
    "EscrowComputeExecutionTemplate",
)
CONDITION_STATES = ("uninitialized", "unfulfilled", "fulfilled", "aborted")
ZERO_ADDRESS = "0x" + "00" * 20
DID_PREFIX = "did:nv:"


class StateError(ChainError):
    """The on-chain state does not allow this step (yet), e.g. a release before compute is fulfilled."""


class UnknownAgreementError(InvalidInputError):
    """The agreement (its ids valid for its terms) was never created on this chain."""


# ---- pure helpers (no RPC) ---------------------------------------------------------------------------------


def _keccak_abi(types: list[str], values: list[Any]) -> bytes:
    return Web3.keccak(encode(types, values))


def _bytes32(value: str | bytes, field: str) -> bytes:
    """``0x``-prefixed or bare 64-hex string, or 32 raw bytes."""
    if isinstance(value, bytes | bytearray) and len(value) == 32:
        return bytes(value)
    if isinstance(value, str):
        text = value.removeprefix("0x")
        if len(text) == 64:
            try:
                return bytes.fromhex(text)
            except ValueError:
                pass
    raise InvalidInputError(f"{field}: expected 32 bytes as 64 hex characters, got {value!r}")


def address_of(value: Any, field: str) -> str:
    if not isinstance(value, str) or not Web3.is_address(value):
        raise InvalidInputError(f"{field}: expected an address (0x + 40 hex), got {value!r}")
    return Web3.to_checksum_address(value)


def _did_bytes(did: str | bytes, field: str = "did") -> bytes:
    if isinstance(did, str) and did.startswith(DID_PREFIX):
        return _bytes32(did[len(DID_PREFIX) :], field)
    return _bytes32(did, field)


def did_str(did: bytes) -> str:
    return DID_PREFIX + did.hex()


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _positive_amounts(amount: int | Sequence[int]) -> list[int]:
    amounts = [amount] if isinstance(amount, int) else list(amount)
    if not amounts:
        raise InvalidInputError("amounts: expected at least one amount")
    for i, value in enumerate(amounts):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInputError(f"amounts[{i}]: expected a positive integer, got {value!r}")
    return amounts


def _non_negative(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{field}: expected a non-negative integer number of blocks, got {value!r}")
    return value


# ---- records passed between tasks (JSON-serializable) ------------------------------------------------------


@dataclass(frozen=True)
class DidRecord:
    """A DID as registered in the DIDRegistry."""

    did: str
    owner: str
    url: str
    checksum: str
    providers: list[str]
    block_number: int
    tx_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ComputeAgreement:
    """An EscrowComputeExecutionTemplate agreement; condition order: compute, lock, escrow."""

    agreement_id: str
    seed: str
    did: str
    consumer: str
    provider: str
    amounts: list[int]
    receivers: list[str]
    token: str
    escrow: str
    compute_condition_id: str
    lock_condition_id: str
    escrow_condition_id: str
    time_lock: int
    time_out: int
    tx_hash: str | None = None

    @property
    def total(self) -> int:
        return sum(self.amounts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputeAgreement:
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"tx_hash"}
        if missing:
            raise InvalidInputError(f"agreement: missing fields {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


# ---- the keeper --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeeperSettings:
    """Where the chain is and whose account acts; ``where`` names the source in error messages."""

    rpc_url: str
    private_key: str = field(repr=False)
    deployment: Deployment
    chain_id: int | None = None
    rpc_retries: int = 5
    where: str = "keeper"
    source: str = "config"  # what sets chain_id, in error messages


class Keeper:
    """Drive Nevermined's DID registry and compute agreements from one actor's account."""

    log = logging.getLogger(__name__)

    def __init__(self, settings: KeeperSettings | None = None) -> None:
        self._settings = settings
        self._signer: Signer | None = None
        self._deployment: Deployment | None = None
        self._contracts: dict[str, Contract] = {}
        self._chain_id = 0

    def keeper_settings(self) -> KeeperSettings:
        """The settings this keeper acts with (the hook reads them from its connection)."""
        if self._settings is None:
            raise DeploymentError("keeper: no settings given")
        return self._settings

    def account(self) -> LocalAccount:
        """This actor's signing account, without touching the chain."""
        settings = self.keeper_settings()
        if not settings.private_key:
            raise InvalidInputError(f"{settings.where}: the account's private key is empty")
        return account_from_key(settings.private_key, f"{settings.where}: private key")

    def sign_message(self, text: str) -> str:
        """EIP-191 (``personal_sign``) signature of ``text`` by this account, ``0x`` + hex."""
        return self.account().sign_message(encode_defunct(text=text)).signature.to_0x_hex()

    def get_conn(self) -> Signer:
        """Connect once: checks the key, the node (bounded retries), the chain id and the contracts' code."""
        if self._signer is not None:
            return self._signer
        settings = self.keeper_settings()
        account, where, deployment = self.account(), settings.where, settings.deployment
        w3 = connect(settings.rpc_url, retries=settings.rpc_retries)
        chain_id = w3.eth.chain_id
        for label, wanted in (
            (f"{settings.source} chain_id", settings.chain_id),
            ("deployment chain_id", deployment.chain_id),
        ):
            if wanted is not None and wanted != chain_id:
                raise DeploymentError(
                    f"{where}: wrong chain id: {label} is {wanted}, {settings.rpc_url} reports {chain_id}"
                )
        for name in HOOK_CONTRACTS:
            address = deployment.addresses[name]
            if not w3.eth.get_code(address):
                raise DeploymentError(
                    f"{where}: no contract code for {name} at {address} ({settings.rpc_url})"
                )
        self._deployment = deployment
        self._chain_id = chain_id
        self._signer = Signer(w3, account)
        return self._signer

    @property
    def address(self) -> str:
        """This connection's account address."""
        return self.get_conn().address

    def _c(self, name: str) -> Contract:
        """The contract object, built on first use (building all of them costs ~40 ms per hook)."""
        signer = self.get_conn()
        if name not in self._contracts:
            assert self._deployment is not None
            self._contracts[name] = self._deployment.contract(signer.w3, name)
        return self._contracts[name]

    def _addr(self, name: str) -> str:
        self.get_conn()
        assert self._deployment is not None
        return self._deployment.addresses[name]

    @property
    def token_address(self) -> str:
        """The NeverminedToken contract prices are paid in."""
        return self._addr("NeverminedToken")

    @contextmanager
    def account_lock(self) -> Iterator[None]:
        """This account alone on this chain (across the processes of this host) for the ``with`` body."""
        signer = self.get_conn()
        with account_lock(self._chain_id, signer.address):
            yield

    def _tx(self, name: str, function: str, *args: Any) -> str:
        with self.account_lock():
            receipt = self.get_conn().transact(self._c(name), name, function, *args)
        tx_hash = receipt["transactionHash"].to_0x_hex()
        self.log.info("%s.%s mined in block %s (tx %s)", name, function, receipt["blockNumber"], tx_hash)
        return tx_hash

    # -- deterministic seeds ------------------------------------------------------------------------------

    @staticmethod
    def agreement_seed(session_id: str, provider: str) -> str:
        """Agreement seed for one session and provider (same inputs, same seed: Airflow retries are safe)."""
        provider = address_of(provider, "provider")
        return _hex(Web3.keccak(text=f"nvfl/agreement/{session_id}/{provider.lower()}"))

    @staticmethod
    def did_seed(session_id: str, name: str) -> str:
        """DID seed for a named asset (workflow, model) of a session."""
        return _hex(Web3.keccak(text=f"nvfl/did/{session_id}/{name}"))

    @staticmethod
    def did_for(seed: str | bytes, owner: str) -> str:
        """The DID ``owner`` gets when registering ``seed`` (``hashDID``)."""
        return did_str(
            _keccak_abi(["bytes32", "address"], [_bytes32(seed, "seed"), address_of(owner, "owner")])
        )

    # -- DID registry --------------------------------------------------------------------------------------

    def get_did(self, did: str | bytes) -> DidRecord:
        """The registered DID; :class:`InvalidInputError` for an unknown one."""
        raw = _did_bytes(did)
        owner, checksum, url, _, block, providers, *_ = (
            self._c("DIDRegistry").functions.getDIDRegister(raw).call()
        )
        if int(owner, 16) == 0:
            raise InvalidInputError(f"did: unknown DID {did_str(raw)} (not registered on this chain)")
        return DidRecord(did_str(raw), owner, url, _hex(checksum), list(providers), block)

    def register_did(
        self, seed: str | bytes, checksum: str | bytes, providers: Sequence[str], url: str
    ) -> DidRecord:
        """Register ``did_for(seed, me)`` with DDO checksum, providers and URL (no-op when already there)."""
        seed_b = _bytes32(seed, "seed")
        checksum_b = _bytes32(checksum, "checksum")
        if isinstance(providers, str):
            raise InvalidInputError("providers: expected a list of addresses, got a string")
        provider_list = [address_of(p, f"providers[{i}]") for i, p in enumerate(providers)]
        if not isinstance(url, str) or not url:
            raise InvalidInputError(f"url: expected a non-empty string, got {url!r}")
        did = self.did_for(seed_b, self.address)
        try:
            existing = self.get_did(did)
        except InvalidInputError:
            tx_hash = self._tx("DIDRegistry", "registerAttribute", seed_b, checksum_b, provider_list, url)
            return DidRecord(**{**self.get_did(did).to_dict(), "tx_hash": tx_hash})
        if (existing.checksum, existing.url, set(existing.providers)) != (
            _hex(checksum_b),
            url,
            set(provider_list),
        ):
            raise InvalidInputError(
                f"seed: {did} is already registered with another checksum, url or providers; use a new seed"
            )
        return existing

    # -- compute agreements --------------------------------------------------------------------------------

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
        seed_b = _bytes32(seed, "seed")
        did_b = _did_bytes(did)
        provider = address_of(provider, "provider")
        amounts = _positive_amounts(amount)
        receiver_list = [provider] if receivers is None else [address_of(r, "receivers[]") for r in receivers]
        if len(receiver_list) != len(amounts):
            raise InvalidInputError(
                f"amounts/receivers: {len(amounts)} amounts but {len(receiver_list)} receivers;"
                " expected equal lengths"
            )
        time_lock = _non_negative(time_lock, "time_lock")
        time_out = _non_negative(time_out, "time_out")
        record = self.get_did(did_b)
        if provider != record.owner and provider not in record.providers:
            raise InvalidInputError(f"provider: {provider} is neither owner nor a provider of {record.did}")
        agreement = self._agreement(
            seed_b, did_b, self.address, provider, amounts, receiver_list, time_lock, time_out
        )
        asm = self._c("AgreementStoreManager")
        if int(asm.functions.getAgreementTemplate(_bytes32(agreement.agreement_id, "id")).call(), 16) != 0:
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
            agreement_id=_hex(_keccak_abi(["bytes32", "address"], [seed, consumer])),
            seed=_hex(seed),
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
        did = _did_bytes(a.did)
        agreement_id = _bytes32(a.agreement_id, "agreement_id")
        compute_hash = _keccak_abi(["bytes32", "address"], [did, a.consumer])
        lock_hash = _keccak_abi(
            ["bytes32", "address", "address", "uint256[]", "address[]"],
            [did, a.escrow, a.token, a.amounts, a.receivers],
        )
        compute_id = self._full_id(agreement_id, "ComputeExecutionCondition", compute_hash)
        lock_id = self._full_id(agreement_id, "LockPaymentCondition", lock_hash)
        escrow_hash = _keccak_abi(
            ["bytes32", "uint256[]", "address[]", "address", "address", "address", "bytes32", "bytes32[]"],
            [did, a.amounts, a.receivers, a.consumer, a.escrow, a.token, lock_id, [compute_id]],
        )
        return {"compute": compute_hash, "lock": lock_hash, "escrow": escrow_hash}

    def _full_id(self, agreement_id: bytes, condition: str, value_hash: bytes) -> bytes:
        return _keccak_abi(
            ["bytes32", "address", "bytes32"], [agreement_id, self._addr(condition), value_hash]
        )

    def _condition_ids(self, a: ComputeAgreement) -> dict[str, str]:
        hashes = self._condition_hashes(a)
        agreement_id = _bytes32(a.agreement_id, "agreement_id")
        contract = {
            "compute": "ComputeExecutionCondition",
            "lock": "LockPaymentCondition",
            "escrow": "EscrowPaymentCondition",
        }
        return {k: _hex(self._full_id(agreement_id, contract[k], h)) for k, h in hashes.items()}

    def _checked(self, agreement: ComputeAgreement | dict[str, Any]) -> ComputeAgreement:
        """Accept an agreement (or its dict from XCom), verify its ids and that it exists on this chain."""
        a = agreement if isinstance(agreement, ComputeAgreement) else ComputeAgreement.from_dict(agreement)
        expected = self._agreement(
            _bytes32(a.seed, "agreement.seed"),
            _did_bytes(a.did, "agreement.did"),
            address_of(a.consumer, "agreement.consumer"),
            address_of(a.provider, "agreement.provider"),
            _positive_amounts(a.amounts),
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
            self._c("ConditionStoreManager").functions.getConditionState(_bytes32(condition_id, "id")).call()
        )
        return CONDITION_STATES[state]

    def _timed_out(self, condition_id: str) -> bool:
        return bool(
            self._c("ConditionStoreManager")
            .functions.isConditionTimedOut(_bytes32(condition_id, "id"))
            .call()
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
        self, agreement: ComputeAgreement | dict[str, Any], *, consumer: str, did: str, amount: int
    ) -> ComputeAgreement:
        """A provider's check before it computes: the agreement exists under the compute template with
        these terms (``consumer``; ``did``; ``amount`` paid to this account alone), its payment is locked
        and its compute condition is open (not fulfilled, aborted or timed out)."""
        a = self._checked(agreement)
        template = self._c("AgreementStoreManager").functions.getAgreementTemplate(
            _bytes32(a.agreement_id, "agreement_id")
        )
        if template.call() != self._addr("EscrowComputeExecutionTemplate"):
            raise InvalidInputError(f"agreement: {a.agreement_id} does not use the compute template")
        if a.consumer != address_of(consumer, "consumer"):
            raise InvalidInputError(f"agreement.consumer: {a.consumer} is not the caller {consumer}")
        if _did_bytes(a.did) != _did_bytes(did):
            raise InvalidInputError(f"agreement.did: {a.did} is not this provider's asset {did}")
        if (a.provider, a.receivers, a.amounts) != (self.address, [self.address], [amount]):
            raise InvalidInputError(
                f"agreement: pays {a.amounts} to {a.receivers}; expected [{amount}] to [{self.address}]"
            )
        states = self.condition_states(a)
        if states["lock"] != "fulfilled":
            raise StateError(f"payment for {a.agreement_id} is not locked (lock condition {states['lock']})")
        if states["compute"] != "unfulfilled" or self._timed_out(a.compute_condition_id):
            state = "timed out" if states["compute"] == "unfulfilled" else states["compute"]
            raise StateError(f"compute of {a.agreement_id} is {state}: nothing to execute")
        return a

    def token_balance(self, address: str) -> int:
        return int(self._c("NeverminedToken").functions.balanceOf(address_of(address, "address")).call())

    def _require_balance(self, owner: str, needed: int) -> None:
        balance = self.token_balance(owner)
        if balance < needed:
            raise InvalidInputError(
                f"amounts: insufficient token balance: {owner} has {balance}, needs {needed}"
            )

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
        did = _did_bytes(a.did)
        args = (_bytes32(a.agreement_id, "id"), did, a.escrow, a.token, a.amounts, a.receivers)
        return self._tx("LockPaymentCondition", "fulfill", *args)

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
        return self._tx(
            "ComputeExecutionCondition",
            "fulfill",
            _bytes32(a.agreement_id, "id"),
            _did_bytes(a.did),
            a.consumer,
        )

    def _escrow_fulfill(self, a: ComputeAgreement) -> str:
        cond = self._c("ConditionStoreManager").functions
        if cond.isConditionTimeLocked(_bytes32(a.escrow_condition_id, "id")).call():
            _, _, time_lock, _, created = cond.getCondition(_bytes32(a.escrow_condition_id, "id")).call()
            raise StateError(
                f"escrow of {a.agreement_id} is time-locked until block {created + time_lock}"
                f" (now {self.get_conn().w3.eth.block_number})"
            )
        return self._tx(
            "EscrowPaymentCondition",
            "fulfill",
            _bytes32(a.agreement_id, "id"),
            _did_bytes(a.did),
            a.amounts,
            a.receivers,
            a.consumer,
            a.escrow,
            a.token,
            _bytes32(a.lock_condition_id, "id"),
            _bytes32(a.compute_condition_id, "id"),
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
            compute_id = _bytes32(a.compute_condition_id, "id")
            if not self._timed_out(a.compute_condition_id):
                _, _, _, time_out, created = (
                    self._c("ConditionStoreManager").functions.getCondition(compute_id).call()
                )
                limit = f"after block {created + time_out}" if time_out else "never (time_out=0)"
                raise StateError(
                    f"compute of {a.agreement_id} has not timed out: refund possible {limit}"
                    f" (now {self.get_conn().w3.eth.block_number})"
                )
            self._tx("ComputeExecutionCondition", "abortByTimeOut", compute_id)
        return self._escrow_fulfill(a)

    # -- provenance ----------------------------------------------------------------------------------------

    def record_provenance(
        self, model_did: str, derived_from: Sequence[str], activity: str, attributes: str = ""
    ) -> list[dict[str, Any]]:
        """Record ``model wasDerivedFrom source`` and ``source used`` by ``activity`` for each source DID.

        Provenance ids are deterministic, so a re-run sends nothing for entries already recorded.
        Needs provenance storage on (NeverminedConfig); this account must be owner/provider/delegate of
        each source.
        """
        model = _did_bytes(model_did, "model_did")
        if isinstance(derived_from, str) or not derived_from:
            raise InvalidInputError("derived_from: expected a non-empty list of DIDs")
        sources = [_did_bytes(d, f"derived_from[{i}]") for i, d in enumerate(derived_from)]
        if not isinstance(activity, str) or not activity:
            raise InvalidInputError(f"activity: expected a non-empty string, got {activity!r}")
        self.get_did(model)
        registry = self._c("DIDRegistry").functions
        for i, source in enumerate(sources):
            self.get_did(source)
            if not registry.isOwnerProviderOrDelegate(source).call({"from": self.address}):
                raise InvalidInputError(
                    f"derived_from[{i}]: {self.address} is not owner, provider or delegate of"
                    f" {did_str(source)}"
                )
        if not self._c("NeverminedConfig").functions.getProvenanceStorage().call():
            raise StateError("provenance storage is off in NeverminedConfig: entries would not be readable")
        activity_id = Web3.keccak(text=activity)
        records = []
        for source in sources:
            steps = (
                ("wasDerivedFrom", (model, source, self.address, activity_id, attributes)),
                ("used", (source, self.address, activity_id, b"", attributes)),
            )
            for method, args in steps:
                prov_id = _keccak_abi(
                    ["string", "bytes32", "bytes32", "bytes32"], [method, model, source, activity_id]
                )
                tx_hash = None
                if int(registry.getProvenanceEntry(prov_id).call()[6], 16) == 0:
                    tx_hash = self._tx("DIDRegistry", method, prov_id, *args)
                records.append({**self.get_provenance(_hex(prov_id)), "method": method, "tx_hash": tx_hash})
        return records

    def get_provenance(self, prov_id: str) -> dict[str, Any]:
        """A provenance entry: did, related_did, agent, activity_id, created_by, block_number."""
        did, related, agent, activity, _, _, created_by, block, _ = (
            self._c("DIDRegistry").functions.getProvenanceEntry(_bytes32(prov_id, "prov_id")).call()
        )
        if int(created_by, 16) == 0:
            raise InvalidInputError(f"prov_id: no provenance entry {prov_id}")
        return {
            "prov_id": prov_id,
            "did": did_str(did),
            "related_did": did_str(related) if any(related) else None,
            "agent": agent,
            "activity_id": _hex(activity),
            "created_by": created_by,
            "block_number": block,
        }
