"""Devstack component "chain": anvil on 127.0.0.1 with the Nevermined contracts deployed.

Accounts come from anvil's public default mnemonic (dev chain only): index 0 owner/deployer, 1 consumer,
2 coordinator provider, 3..5 data providers. Keys are derived on demand and never stored in the state.
The consumer is funded with ``CONSUMER_TOKENS`` tokens (in base units by the token's ``decimals()``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from airflow_nevermined_fl import process

CHAIN_ID = 31337
HOST = "127.0.0.1"
# anvil's well-known default mnemonic: its accounts are public test accounts, never use them on a real chain.
MNEMONIC = "test test test test test test test test test test test junk"
OWNER, CONSUMER, COORDINATOR_PROVIDER = 0, 1, 2
DATA_PROVIDERS = (3, 4, 5)
CONSUMER_TOKENS = 1_000_000  # tokens: 40,000 sessions of the devstack's prices (25 tokens)
CONSUMER_CONN_ID = "nevermined_consumer"
BLOCK_TIME = 1  # seconds between the embedded chain's interval blocks


def account(index: int) -> LocalAccount:
    """The dev account at ``m/44'/60'/0'/0/<index>`` of anvil's default mnemonic."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def accounts() -> dict[str, Any]:
    """Addresses by role."""
    return {
        "owner": account(OWNER).address,
        "consumer": account(CONSUMER).address,
        "coordinator_provider": account(COORDINATOR_PROVIDER).address,
        "data_providers": [account(i).address for i in DATA_PROVIDERS],
    }


def up(home: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Start anvil, deploy and wire the contracts, fund the consumer; reuse ``previous`` when alive."""
    if (running := process.running_service(previous, HOST)) is not None:
        return running
    from airflow_nevermined_fl.contracts.client import Signer, connect
    from airflow_nevermined_fl.contracts.compile import anvil_binary, load_artifacts
    from airflow_nevermined_fl.contracts.deployment import deploy, mint
    from airflow_nevermined_fl.contracts.units import read_token

    artifacts = load_artifacts()  # compiles on a cold cache, before anything is started
    chain_home = home / "chain"
    port = int(os.environ.get("NVFL_CHAIN_PORT") or process.free_port(HOST))
    argv = [str(anvil_binary()), "--host", HOST, "--port", str(port), "--chain-id", str(CHAIN_ID)]
    # A block every BLOCK_TIME seconds and each transaction at once: block-based time-outs (refunds) pass
    # with time, as on a real chain, and transactions need not wait for the next block.
    argv += ["--mnemonic", MNEMONIC, "--accounts", "10", "--block-time", str(BLOCK_TIME), "--mixed-mining"]
    pid = process.start(argv, chain_home / "anvil.log")
    state: dict[str, Any] = {
        "pid": pid,
        "port": port,
        "rpc_url": f"http://{HOST}:{port}",
        "chain_id": CHAIN_ID,
        "block_time": BLOCK_TIME,
        "deployment_file": str(chain_home / "deployment.json"),
        "log": str(chain_home / "anvil.log"),
    }
    with process.stopped_on_error(pid):
        process.wait_port(HOST, port, timeout=30, pid=pid, what="anvil")
        signer = Signer(connect(state["rpc_url"]), account(OWNER))
        deployment = deploy(signer, artifacts)
        token = read_token(deployment.contract(signer.w3, "NeverminedToken"))
        mint(signer, deployment, account(CONSUMER).address, token.base(CONSUMER_TOKENS))
        deployment.write(Path(state["deployment_file"]))
    return state


def alive(state: dict[str, Any]) -> bool:
    return process.service_alive(state, HOST)


def down(state: dict[str, Any]) -> None:
    process.stop_service(state)


def public(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "rpc_url": state["rpc_url"],
        "chain_id": state["chain_id"],
        "deployment_file": state["deployment_file"],
        "accounts": accounts(),
    }


def _connection_uri(state: dict[str, Any], conn_id: str, index: int) -> str:
    """Airflow connection URI (type ``nevermined``) of dev account ``index``. It holds the private key."""
    from airflow.sdk import Connection

    return Connection(
        conn_id=conn_id,
        conn_type="nevermined",
        host=state["rpc_url"],
        password=account(index).key.to_0x_hex(),
        extra=json.dumps(
            {
                "deployment_file": state["deployment_file"],
                "chain_id": state["chain_id"],
                "block_time": state.get("block_time", BLOCK_TIME),
            }
            | ({"explorer_tx_url": state["explorer_tx_url"]} if state.get("explorer_tx_url") else {})
        ),
    ).get_uri()


def consumer_connection_uri(state: dict[str, Any]) -> str:
    """The consumer's connection (``CONSUMER_CONN_ID``): the only account key a consumer's Airflow holds."""
    return _connection_uri(state, CONSUMER_CONN_ID, CONSUMER)


def connection_uris(state: dict[str, Any]) -> dict[str, str]:
    """Connection URIs of every actor, for tests and benchmarks playing each party with its Keeper; a
    consumer's Airflow gets :func:`consumer_connection_uri` only (providers keep their keys)."""
    actors = {CONSUMER_CONN_ID: CONSUMER, "nevermined_coordinator_provider": COORDINATOR_PROVIDER}
    actors |= {f"nevermined_provider_{n}": i for n, i in enumerate(DATA_PROVIDERS, start=1)}
    return {conn_id: _connection_uri(state, conn_id, index) for conn_id, index in actors.items()}
