"""One real anvil with the Nevermined contracts for the whole session (devstack "chain" component)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_nevermined_fl.devtools.devstack import chain


@pytest.fixture(scope="session")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A started chain (free port, contracts deployed, consumer funded) and Airflow connections to it."""
    state = chain.up(tmp_path_factory.mktemp("devchain"), None)
    env = {f"AIRFLOW_CONN_{cid.upper()}": uri for cid, uri in chain.connection_uris(state).items()}
    os.environ.update(env)
    try:
        yield state
    finally:
        for key in env:
            os.environ.pop(key, None)
        chain.down(state)


@pytest.fixture(scope="session")
def w3(devchain: dict[str, Any]):  # noqa: ANN201 - web3.Web3
    from airflow_nevermined_fl.contracts.client import connect

    return connect(devchain["rpc_url"])


class ChainTools:
    """Helpers on the test chain: mine blocks, read nonces, list the keys that must never leak."""

    def __init__(self, w3: Any) -> None:
        self.w3 = w3

    def mine(self, blocks: int) -> None:
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])

    def nonce(self, address: str) -> int:
        return int(self.w3.eth.get_transaction_count(address))

    @staticmethod
    def secret_keys() -> list[str]:
        keys = [chain.account(i).key.hex().removeprefix("0x") for i in range(6)]
        return keys + ["0x" + k for k in keys]


@pytest.fixture(scope="session")
def tools(w3: Any) -> ChainTools:
    return ChainTools(w3)
