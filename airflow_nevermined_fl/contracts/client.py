"""JSON-RPC connection with a request timeout and bounded retries, and a signer that sends transactions and
waits (bounded) for their receipts.

Every JSON-RPC request is bounded by the connection's request timeout. A transport failure (refused, reset,
no answer in time, an HTTP error status) is a :class:`ChainUnreachableError` naming the RPC URL and what was
being done, never a raw requests/urllib3 error; a receipt that does not come in time is a
:class:`ReceiptTimeoutError` (the transaction may still be mined), never a revert.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint, RPCResponse, TxReceipt

from airflow_nevermined_fl.contracts.errors import (
    ChainUnreachableError,
    InvalidInputError,
    PendingTransactionError,
    ReceiptTimeoutError,
    RpcHttpError,
    RpcTimeoutError,
    TxRevertedError,
)

RPC_TIMEOUT = 30.0
"""Seconds one JSON-RPC request may take (to connect, and to answer)."""
RECEIPT_TIMEOUT = 120.0
"""Seconds a sent transaction may take to be mined before :class:`ReceiptTimeoutError`."""
GAS_MARGIN = 1.2

_ACTIVITY: ContextVar[str | None] = ContextVar("nvfl_chain_activity", default=None)


@contextmanager
def activity(what: str) -> Iterator[None]:
    """Name what the JSON-RPC requests of the ``with`` body are for (``"sending X.f"``), for their errors."""
    token = _ACTIVITY.set(what)
    try:
        yield
    finally:
        _ACTIVITY.reset(token)


def positive_seconds(value: Any, field: str) -> float:
    """``value`` as a positive, finite number of seconds; :class:`InvalidInputError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidInputError(f"{field}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _os_reason(exc: BaseException) -> str:
    """The innermost OS-level reason of a transport error (e.g. ``"Connection refused"``), else ``""``."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.strerror:
            return str(err.strerror)
        linked = (err.__cause__, err.__context__, getattr(err, "reason", None), *err.args)
        todo += [e for e in linked if isinstance(e, BaseException)]
    return ""


class RpcProvider(HTTPProvider):
    """An HTTP JSON-RPC provider whose requests are bounded by ``timeout`` and whose transport failures are
    :class:`ChainUnreachableError` subclasses naming the URL, the current :func:`activity` and the method."""

    def __init__(self, rpc_url: str, timeout: float = RPC_TIMEOUT) -> None:
        super().__init__(rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        self.rpc_url = rpc_url
        self.timeout = timeout
        self.contract_names: dict[str, str] = {}  # lower-case address -> contract name, for messages

    def _what(self, method: RPCEndpoint, params: Any) -> str:
        rpc = str(method)
        target = params[0].get("to") if params and isinstance(params[0], dict) else None
        if isinstance(target, str) and target.lower() in self.contract_names:
            rpc += f" to {self.contract_names[target.lower()]}"
        doing = _ACTIVITY.get()
        return f"{doing} ({rpc})" if doing else f"calling {rpc}"

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except requests.RequestException as exc:
            error, failure, status = self._failure(exc)
            cause = _os_reason(exc)
            name = type(exc).__name__ + (f" ({cause})" if cause else "")
        raise error(
            f"chain RPC {self.rpc_url}: {failure} while {self._what(method, params)}: {name}",
            rpc_url=self.rpc_url,
            reason=f"{failure}: {name}",
            status_code=status,
        ) from None

    def _failure(self, exc: requests.RequestException) -> tuple[type[ChainUnreachableError], str, int | None]:
        """(error class, what failed, HTTP status) of a requests error."""
        if isinstance(exc, requests.ConnectTimeout):
            return RpcTimeoutError, f"no connection within {self.timeout:g} s", None
        if isinstance(exc, requests.Timeout):
            return RpcTimeoutError, f"no answer within {self.timeout:g} s", None
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            return RpcHttpError, f"HTTP {status} {exc.response.reason or ''}".rstrip(), status
        return ChainUnreachableError, "unreachable", None


def name_contracts(w3: Web3, addresses: dict[str, str]) -> None:
    """Let the RPC errors of ``w3`` name these contracts (``{name: address}``) instead of their addresses."""
    if isinstance(w3.provider, RpcProvider):
        w3.provider.contract_names.update({a.lower(): name for name, a in addresses.items()})


def connect(rpc_url: str, retries: int = 5, delay: float = 0.5, timeout: float = RPC_TIMEOUT) -> Web3:
    """A connected :class:`Web3` whose requests each take at most ``timeout`` s; ``retries`` attempts
    (``delay`` doubling in between), then a :class:`ChainUnreachableError` naming the URL. Bounded: at most
    ``retries * timeout`` plus the delays."""
    if not rpc_url or "://" not in rpc_url:
        raise InvalidInputError(f"rpc_url: expected an http(s) URL, got {rpc_url!r}")
    timeout = positive_seconds(timeout, "rpc_timeout")
    w3 = Web3(RpcProvider(rpc_url, timeout))
    attempts = max(1, retries)
    last: ChainUnreachableError | None = None
    for attempt in range(attempts):
        try:
            with activity("connecting"):
                w3.eth.chain_id  # noqa: B018 - the cheapest call that proves the node answers
            return w3
        except ChainUnreachableError as exc:
            last = exc
            if attempt + 1 < attempts:
                time.sleep(delay * 2**attempt)
    assert last is not None
    raise type(last)(
        f"chain RPC {rpc_url} unreachable after {attempts} attempts while connecting (last: {last.reason})",
        rpc_url=rpc_url,
        reason=last.reason,
        status_code=last.status_code,
    )


def account_from_key(private_key: str, field: str = "private key") -> LocalAccount:
    """A local signer; the error for a malformed key never repeats the key."""
    try:
        return Account.from_key(private_key)
    except Exception:
        raise InvalidInputError(f"{field}: expected a 32-byte hex private key") from None


def revert_reason(exc: ContractLogicError) -> str:
    message = str(exc.message or exc)
    return (
        message.removeprefix("execution reverted: ").removeprefix("execution reverted") or "no reason given"
    )


class Signer:
    """Sends transactions from one account; each call waits (at most ``receipt_timeout`` s) for its receipt
    and raises on revert."""

    def __init__(self, w3: Web3, account: LocalAccount, receipt_timeout: float = RECEIPT_TIMEOUT) -> None:
        self.w3 = w3
        self._account = account
        self.address: str = account.address
        self.receipt_timeout = positive_seconds(receipt_timeout, "receipt_timeout")

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    def _nonce(self, what: str) -> int:
        """The next nonce; refuses while an earlier transaction of this account is not mined (the caller's
        reading of the chain may be about to change: it re-reads on its next attempt)."""
        latest = self.w3.eth.get_transaction_count(self.address, "latest")
        pending = self.w3.eth.get_transaction_count(self.address, "pending")
        if pending > latest:
            raise PendingTransactionError(
                f"{what} not sent: {self.address} has {pending - latest} transaction(s) not mined yet"
                f" (nonce {latest} onwards); a retry once they are mined checks the chain first"
            )
        return pending

    def _send(self, tx: dict[str, Any], contract: str, function: str) -> TxReceipt:
        what = f"{contract}.{function}"
        # Estimates can fall short (anvil under-estimated TemplateStoreManager.approveTemplate): add margin.
        tx["gas"] = int(tx["gas"] * GAS_MARGIN) + 10_000
        with activity(f"sending {what}"):
            tx["nonce"] = self._nonce(what)
        signed = self._account.sign_transaction(tx)
        tx_hash = signed.hash.to_0x_hex()
        try:
            with activity(f"sending {what}"):
                self.w3.eth.send_raw_transaction(signed.raw_transaction)
            with activity(f"waiting for the receipt of {what}"):
                receipt = self.w3.eth.wait_for_transaction_receipt(signed.hash, timeout=self.receipt_timeout)
        except TimeExhausted:
            raise ReceiptTimeoutError(contract, function, tx_hash, self.receipt_timeout) from None
        except ChainUnreachableError as exc:
            raise type(exc)(
                f"{exc} (transaction {tx_hash} may still be mined; a retry checks the chain first)",
                rpc_url=exc.rpc_url,
                reason=exc.reason,
                status_code=exc.status_code,
            ) from None
        if receipt["status"] != 1:
            raise TxRevertedError(contract, function, "transaction failed (status 0)", tx_hash)
        return receipt

    def transact(self, contract: Contract, name: str, function: str, *args: Any) -> TxReceipt:
        """Call ``name.function(*args)`` as a transaction; gas estimation surfaces the revert reason."""
        try:
            with activity(f"preparing {name}.{function}"):
                tx = contract.functions[function](*args).build_transaction({"from": self.address})
        except ContractLogicError as exc:
            raise TxRevertedError(name, function, revert_reason(exc)) from None
        return self._send(dict(tx), name, function)

    def deploy(self, name: str, abi: list[dict[str, Any]], bytecode: str) -> str:
        """Deploy ``bytecode`` (no constructor arguments); returns the contract address."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        try:
            with activity(f"preparing {name}.constructor"):
                tx = factory.constructor().build_transaction({"from": self.address})
        except ContractLogicError as exc:
            raise TxRevertedError(name, "constructor", revert_reason(exc)) from None
        return str(self._send(dict(tx), name, "constructor")["contractAddress"])
