"""JSON-RPC connection with bounded retries, and a signer that sends transactions and waits for receipts."""

from __future__ import annotations

import time
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, ProviderConnectionError, TimeExhausted
from web3.types import TxReceipt

from airflow_nevermined_fl.contracts.errors import ChainUnreachableError, InvalidInputError, TxRevertedError

RECEIPT_TIMEOUT = 120.0
GAS_MARGIN = 1.2


def connect(rpc_url: str, retries: int = 5, delay: float = 0.5, timeout: float = 10.0) -> Web3:
    """A connected :class:`Web3`; ``retries`` attempts (``delay`` doubling), then an error naming the URL."""
    if not rpc_url or "://" not in rpc_url:
        raise InvalidInputError(f"rpc_url: expected an http(s) URL, got {rpc_url!r}")
    provider = Web3.HTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
    )
    w3 = Web3(provider)
    last: Exception | None = None
    for attempt in range(max(1, retries)):
        try:
            w3.eth.chain_id  # noqa: B018 - the cheapest call that proves the node answers
            return w3
        except (OSError, ProviderConnectionError) as exc:
            last = exc
            if attempt + 1 < retries:
                time.sleep(delay * 2**attempt)
    raise ChainUnreachableError(
        f"JSON-RPC endpoint {rpc_url} unreachable after {max(1, retries)} attempts: {type(last).__name__}"
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
    """Sends transactions from one account; each call waits for its receipt and raises on revert."""

    def __init__(self, w3: Web3, account: LocalAccount) -> None:
        self.w3 = w3
        self._account = account
        self.address: str = account.address

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    def _send(self, tx: dict[str, Any], contract: str, function: str) -> TxReceipt:
        # Estimates can fall short (anvil under-estimated TemplateStoreManager.approveTemplate): add margin.
        tx["gas"] = int(tx["gas"] * GAS_MARGIN) + 10_000
        tx["nonce"] = self.w3.eth.get_transaction_count(self.address, "pending")
        signed = self._account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT)
        except TimeExhausted:
            raise TxRevertedError(
                contract, function, f"no receipt within {RECEIPT_TIMEOUT:.0f}s", tx_hash.to_0x_hex()
            ) from None
        if receipt["status"] != 1:
            raise TxRevertedError(contract, function, "transaction failed (status 0)", tx_hash.to_0x_hex())
        return receipt

    def transact(self, contract: Contract, name: str, function: str, *args: Any) -> TxReceipt:
        """Call ``name.function(*args)`` as a transaction; gas estimation surfaces the revert reason."""
        try:
            tx = contract.functions[function](*args).build_transaction({"from": self.address})
        except ContractLogicError as exc:
            raise TxRevertedError(name, function, revert_reason(exc)) from None
        return self._send(dict(tx), name, function)

    def deploy(self, name: str, abi: list[dict[str, Any]], bytecode: str) -> str:
        """Deploy ``bytecode`` (no constructor arguments); returns the contract address."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        try:
            tx = factory.constructor().build_transaction({"from": self.address})
        except ContractLogicError as exc:
            raise TxRevertedError(name, "constructor", revert_reason(exc)) from None
        return str(self._send(dict(tx), name, "constructor")["contractAddress"])
