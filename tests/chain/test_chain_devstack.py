"""The devstack "chain" component and the contract compile cache."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_nevermined_fl.contracts import CONTRACTS
from airflow_nevermined_fl.contracts import compile as contracts_compile
from airflow_nevermined_fl.contracts.client import connect
from airflow_nevermined_fl.contracts.deployment import load_deployment
from airflow_nevermined_fl.contracts.units import read_token
from airflow_nevermined_fl.devtools import cli
from airflow_nevermined_fl.devtools.devstack import chain


@pytest.mark.chain
def test_compiled_artifacts_cover_every_contract_and_warm_start_never_recompiles(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = contracts_compile.compile_contracts()
    artifacts = contracts_compile.load_artifacts()
    assert list(artifacts) == list(CONTRACTS)
    for name, artifact in artifacts.items():
        assert artifact["bytecode"].startswith("0x60") and "__$" not in artifact["bytecode"], name
        assert any(entry.get("name") == "initialize" for entry in artifact["abi"]), name

    def no_compiler(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("warm start must not run the compiler")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    mtime = path.stat().st_mtime_ns
    assert cli.main(["contracts", "compile"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert path.stat().st_mtime_ns == mtime


def test_cache_key_follows_pins_and_contract_list(monkeypatch: pytest.MonkeyPatch) -> None:
    key = contracts_compile.artifacts_key()
    assert key == contracts_compile.artifacts_key()
    assert contracts_compile.artifacts_file().parent.name == key
    monkeypatch.setattr(contracts_compile, "CONTRACTS", CONTRACTS[:-1])
    assert contracts_compile.artifacts_key() != key


@pytest.mark.chain
def test_chain_up_reuse_down(tmp_path: Path) -> None:
    state = chain.up(tmp_path, None)
    try:
        assert chain.alive(state)
        assert state["rpc_url"].startswith("http://127.0.0.1:")
        public = chain.public(state)
        assert set(public) == {"rpc_url", "chain_id", "deployment_file", "accounts"}
        assert public["chain_id"] == 31337 == connect(state["rpc_url"]).eth.chain_id
        assert set(public["accounts"]) == {"owner", "consumer", "coordinator_provider", "data_providers"}
        assert len(public["accounts"]["data_providers"]) == 3
        for key in [chain.account(i).key.hex().removeprefix("0x") for i in range(6)]:
            assert key not in json.dumps(public) and key not in json.dumps(state)
        deployment = load_deployment(public["deployment_file"])
        assert deployment.chain_id == 31337 and set(deployment.addresses) == set(CONTRACTS)
        token = deployment.contract(connect(state["rpc_url"]), "NeverminedToken")
        funded = read_token(token).base(chain.CONSUMER_TOKENS)  # whole tokens at the token's decimals
        assert token.functions.balanceOf(public["accounts"]["consumer"]).call() == funded == 10**24

        assert chain.up(tmp_path, state) == state  # a live chain is reused, nothing redeployed
    finally:
        chain.down(state)
    assert not chain.alive(state)
    chain.down(state)  # stopping twice is harmless


def test_connection_uris_round_trip_through_airflow(devchain: dict[str, Any]) -> None:
    from airflow.sdk import Connection

    uris = chain.connection_uris(devchain)
    assert set(uris) == {
        "nevermined_consumer",
        "nevermined_coordinator_provider",
        "nevermined_provider_1",
        "nevermined_provider_2",
        "nevermined_provider_3",
    }
    conn = Connection.from_uri(uris["nevermined_provider_2"], conn_id="x")
    assert conn.conn_type == "nevermined" and conn.host == devchain["rpc_url"]
    assert conn.extra_dejson == {
        "deployment_file": devchain["deployment_file"],
        "chain_id": 31337,
        "block_time": chain.BLOCK_TIME,
    }
    assert conn.password == chain.account(chain.DATA_PROVIDERS[1]).key.to_0x_hex()
    # A consumer's Airflow gets its own connection alone.
    consumer = Connection.from_uri(chain.consumer_connection_uri(devchain), conn_id=chain.CONSUMER_CONN_ID)
    assert consumer.password == chain.account(chain.CONSUMER).key.to_0x_hex()
    assert consumer.get_uri() == uris[chain.CONSUMER_CONN_ID]


def test_the_dev_chain_mines_with_time(devchain: dict[str, Any]) -> None:
    """A block every second even without transactions (anvil --block-time 1 --mixed-mining): block-based
    time-outs, such as an agreement's refund, pass with time as on a real chain."""
    from airflow_nevermined_fl.contracts.client import connect

    w3 = connect(devchain["rpc_url"])
    first = w3.eth.block_number
    deadline = time.monotonic() + 10
    while w3.eth.block_number < first + 2:
        assert time.monotonic() < deadline, "no block mined for lack of transactions"
        time.sleep(0.2)
