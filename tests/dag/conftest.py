"""The real embedded stack for the DAG tests (session scope): anvil + Nevermined contracts, SeaweedFS,
the four provider gateways (local backend; each with its own key and data: digits split non-IID over the
3 data providers), a migrated Airflow SQLite home holding only the consumer's connections."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagstack import Stack


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
            conn_env=airflow.connection_env({"chain": chain_state, "s3": s3_state}),
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
