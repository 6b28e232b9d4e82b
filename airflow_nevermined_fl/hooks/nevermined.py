"""NeverminedHook: one Airflow connection = one actor's account on a chain running the Nevermined contracts.

Connection (type ``nevermined``): ``host`` = JSON-RPC URL, ``password`` = the account's private key,
extra ``deployment_file`` (JSON with chain id and per contract address + ABI) or ``addresses``
(``{contract: address}``, ABIs from the compiled contracts), optional ``chain_id`` (checked against the node),
``rpc_retries``, ``block_time`` (seconds between blocks, at least: sizes the agreements' refund
time-out), ``gateway_ca_file`` (CA bundle for the providers' HTTPS gateways) and ``explorer_tx_url`` (a
block explorer's transaction URL with ``{tx_hash}``, for the tasks' extra links). The key is never
logged, returned, or put in XCom. The chain logic is the
:class:`~airflow_nevermined_fl.contracts.keeper.Keeper`; this hook reads its settings from the connection.
"""

from __future__ import annotations

from functools import cached_property
from string import Formatter
from typing import Any

from airflow.sdk.bases.hook import BaseHook
from eth_account.signers.local import LocalAccount

from airflow_nevermined_fl.contracts.client import account_from_key
from airflow_nevermined_fl.contracts.deployment import Deployment, load_deployment
from airflow_nevermined_fl.contracts.errors import DeploymentError, InvalidInputError
from airflow_nevermined_fl.contracts.keeper import (
    HOOK_CONTRACTS,
    ComputeAgreement,
    DidRecord,
    Keeper,
    KeeperSettings,
    StateError,
    address_of,
)
from airflow_nevermined_fl.contracts.timeouts import DEFAULT_BLOCK_TIME

__all__ = ["ComputeAgreement", "DidRecord", "NeverminedHook", "StateError"]


class NeverminedHook(BaseHook, Keeper):
    """Drive Nevermined's DID registry and compute agreements from one actor's account."""

    conn_name_attr = "nevermined_conn_id"
    default_conn_name = "nevermined_default"
    conn_type = "nevermined"
    hook_name = "Nevermined"
    get_conn = Keeper.get_conn  # BaseHook's abstract get_conn comes first in the MRO

    def __init__(self, nevermined_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        BaseHook.__init__(self, **kwargs)
        Keeper.__init__(self)
        self.nevermined_conn_id = nevermined_conn_id
        self._account: LocalAccount | None = None

    def __repr__(self) -> str:
        return f"NeverminedHook(nevermined_conn_id={self.nevermined_conn_id!r})"

    @cached_property
    def _extra(self) -> dict[str, Any]:
        return self.get_connection(self.nevermined_conn_id).extra_dejson

    def keeper_settings(self) -> KeeperSettings:
        if self._settings is not None:
            return self._settings
        conn = self.get_connection(self.nevermined_conn_id)
        where = f"connection {self.nevermined_conn_id!r}"
        extra = conn.extra_dejson
        rpc_url = conn.host or ""
        if rpc_url and "://" not in rpc_url:
            rpc_url = f"http://{rpc_url}" + (f":{conn.port}" if conn.port else "")
        self.account()
        expected = extra.get("chain_id")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise InvalidInputError(f"{where}: extra chain_id must be an integer, got {expected!r}")
        retries = extra.get("rpc_retries", 5)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            raise InvalidInputError(f"{where}: extra rpc_retries must be a positive integer, got {retries!r}")
        self._settings = KeeperSettings(
            rpc_url=rpc_url,
            private_key=conn.password,
            deployment=self._load_deployment(extra, where),
            chain_id=expected,
            rpc_retries=retries,
            where=where,
            source="connection",
        )
        return self._settings

    def account(self) -> LocalAccount:
        """The connection's account (its password is the key), without touching the chain."""
        if self._account is None:
            conn = self.get_connection(self.nevermined_conn_id)
            where = f"connection {self.nevermined_conn_id!r}"
            if not conn.password:
                raise InvalidInputError(f"{where}: password (the account's private key) is empty")
            self._account = account_from_key(conn.password, f"{where}: password")
        return self._account

    @property
    def block_time(self) -> float:
        """Seconds between the chain's blocks, at least (extra ``block_time``; default Ethereum's 12)."""
        value = self._extra.get("block_time", DEFAULT_BLOCK_TIME)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise InvalidInputError(f"{self.nevermined_conn_id}: extra block_time must be a number > 0")
        return float(value)

    @property
    def gateway_ca_file(self) -> str | None:
        """CA bundle that verifies the providers' HTTPS gateways (None: the system's CAs)."""
        return self._extra.get("gateway_ca_file") or None

    @property
    def explorer_tx_url(self) -> str | None:
        """A block explorer's URL of a transaction, ``{tx_hash}`` in it (extra ``explorer_tx_url``; None:
        no explorer links)."""
        value = self._extra.get("explorer_tx_url") or None
        if value is None:
            return None
        try:
            fields = {field for _, field, _, _ in Formatter().parse(value) if field is not None}
        except (TypeError, ValueError):  # not a string, or stray braces
            fields = set()
        if fields != {"tx_hash"} or not value.startswith(("https://", "http://")):
            raise InvalidInputError(
                f"{self.nevermined_conn_id}: extra explorer_tx_url must be an http(s) URL with {{tx_hash}}"
                f" as its only field, got {value!r}"
            )
        return str(value)

    @staticmethod
    def _load_deployment(extra: dict[str, Any], where: str) -> Deployment:
        if extra.get("deployment_file"):
            return load_deployment(extra["deployment_file"], HOOK_CONTRACTS)
        addresses = extra.get("addresses")
        if not isinstance(addresses, dict):
            raise DeploymentError(
                f"{where}: extra needs 'deployment_file' or 'addresses' ({{contract: address}})"
            )
        from airflow_nevermined_fl.contracts.compile import load_artifacts

        artifacts = load_artifacts()
        missing = [n for n in HOOK_CONTRACTS if n not in addresses]
        if missing:
            raise DeploymentError(f"{where}: extra addresses lacks {missing}")
        return Deployment(
            chain_id=extra.get("chain_id"),
            addresses={n: address_of(addresses[n], f"addresses.{n}") for n in HOOK_CONTRACTS},
            abis={n: artifacts[n]["abi"] for n in HOOK_CONTRACTS},
        )

    def test_connection(self) -> tuple[bool, str]:
        try:
            signer = self.get_conn()
        except Exception as exc:  # shown in the Airflow UI; messages never contain the key
            return False, str(exc)
        return True, f"chain {signer.w3.eth.chain_id}, account {signer.address}"
