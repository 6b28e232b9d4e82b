"""The keeper's core: one account connected to a Nevermined deployment, its signatures and transactions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from airflow_nevermined_fl.contracts.account_lock import account_lock
from airflow_nevermined_fl.contracts.client import (
    RECEIPT_TIMEOUT,
    RPC_TIMEOUT,
    Signer,
    account_from_key,
    activity,
    connect,
    name_contracts,
    positive_seconds,
)
from airflow_nevermined_fl.contracts.deployment import Deployment
from airflow_nevermined_fl.contracts.errors import DeploymentError, InvalidInputError
from airflow_nevermined_fl.contracts.units import Token, read_token

# The contracts a keeper uses; get_conn checks each has code on the chain.
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


@dataclass(frozen=True)
class KeeperSettings:
    """Where the chain is and whose account acts; ``where`` names the source in error messages.

    ``rpc_timeout`` bounds each JSON-RPC request (s), ``rpc_retries`` the attempts to connect, and
    ``receipt_timeout`` the wait for a sent transaction to be mined (s)."""

    rpc_url: str
    private_key: str = field(repr=False)
    deployment: Deployment
    chain_id: int | None = None
    rpc_retries: int = 5
    where: str = "keeper"
    source: str = "config"  # what sets chain_id, in error messages
    rpc_timeout: float = RPC_TIMEOUT
    receipt_timeout: float = RECEIPT_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("rpc_timeout", "receipt_timeout"):
            positive_seconds(getattr(self, name), f"{self.where}: {name}")


class KeeperConnection:
    """Connection, account, account lock, contracts and transactions of one actor's keeper."""

    log: logging.Logger  # the concrete class's logger

    def __init__(self, settings: KeeperSettings | None = None) -> None:
        self._settings = settings
        self._signer: Signer | None = None
        self._deployment: Deployment | None = None
        self._contracts: dict[str, Contract] = {}
        self._token: Token | None = None
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
        account = self.account()
        w3 = connect(settings.rpc_url, retries=settings.rpc_retries, timeout=settings.rpc_timeout)
        name_contracts(w3, settings.deployment.addresses)
        with activity("checking the deployment"):
            return self._checked_conn(w3, account, settings)

    def _checked_conn(self, w3: Web3, account: LocalAccount, settings: KeeperSettings) -> Signer:
        """The signer of ``w3`` once the chain id and the contracts' code match the deployment."""
        where, deployment = settings.where, settings.deployment
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
        self._signer = Signer(w3, account, receipt_timeout=settings.receipt_timeout)
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

    @property
    def token(self) -> Token:
        """The NeverminedToken's symbol and decimals (prices are in its units), read once per connection."""
        if self._token is None:
            self._token = read_token(self._c("NeverminedToken"))
        return self._token

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
