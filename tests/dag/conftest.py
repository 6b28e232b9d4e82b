"""The real embedded stack for the DAG tests (session scope): anvil + Nevermined contracts, SeaweedFS,
the four provider gateways (local backend; each with its own key and data: digits split non-IID over the
3 data providers), a migrated Airflow SQLite home holding only the consumer's connections; and, for the
tests through Airflow's components, an Airflow (api-server, scheduler, dag-processor, triggerer) on them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagstack import PROXIED_CONN_ID, Api, Stack
from stalled_servers import RpcProxy

from airflow_nevermined_fl.client import AirflowClient

EXPLORER = {"explorer_tx_url": "https://explorer.test/tx/{tx_hash}"}
"""The consumer's block explorer (a URL template only: the tasks' transaction links point at it)."""


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from airflow_nevermined_fl.devtools.devstack import airflow, chain, gateways, s3

    home = tmp_path_factory.mktemp("dag-stack")
    chain_state = chain.up(home, None)
    s3_state = gateways_state = result = None
    try:
        s3_state = s3.up(home, None)
        gateways_state = gateways.start(home, chain_state, s3_state)
        airflow_home = home / "airflow"
        airflow_home.mkdir()
        result = Stack(
            home=home,
            chain=chain_state,
            s3=s3_state,
            gateways=gateways.public(gateways_state)["gateways"],
            conn_env=airflow.connection_env({"chain": chain_state | EXPLORER, "s3": s3_state}),
            airflow_home=airflow_home,
            gateways_state=gateways_state,
        )
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            env=result.airflow_env(),
            check=True,
            capture_output=True,
        )
        yield result
    finally:
        for state in [*(result.extra_gateways.values() if result else []), gateways_state]:
            if state:
                gateways.down(state)
        if s3_state:
            s3.down(s3_state)
        chain.down(chain_state)


@pytest.fixture(scope="session")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from airflow_nevermined_fl.devtools.devstack import airflow, chain

    with RpcProxy(stack.chain["rpc_url"]) as rpc:
        proxied = chain.consumer_connection_uri(stack.chain | {"rpc_url": rpc.url})
        conn_env = stack.conn_env | {f"AIRFLOW_CONN_{PROXIED_CONN_ID.upper()}": proxied}
        state = airflow.start(tmp_path_factory.mktemp("airflow-api"), conn_env)
        client = None
        try:
            client = AirflowClient(state["url"], airflow.USER, airflow.password(state))
            client.wait_dag("fl_session")
            yield Api(state, client, conn_env, rpc)
        finally:
            if client:
                client.close()
            airflow.down(state)
