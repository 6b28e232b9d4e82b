"""The real embedded stack for the DAG tests (session scope): anvil + Nevermined contracts, SeaweedFS,
digits split non-IID over 3 data providers, a migrated Airflow SQLite home."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagstack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from airflow_nevermined_fl import data
    from airflow_nevermined_fl.devstack import airflow, chain, s3
    from airflow_nevermined_fl.paths import state_dir

    home = tmp_path_factory.mktemp("dag-stack")
    chain_state = chain.up(home, None)
    s3_state = None
    try:
        s3_state = s3.up(home, None)
        manifest = data.partition(state_dir() / "data" / "digits-noniid", 3, scheme="non-iid", seed=0)
        airflow_home = home / "airflow"
        airflow_home.mkdir()
        result = Stack(
            home=home,
            chain=chain_state,
            s3=s3_state,
            manifest=manifest,
            conn_env=airflow.connection_env({"chain": chain_state, "s3": s3_state}),
            airflow_home=airflow_home,
        )
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            env=result.airflow_env(),
            check=True,
            capture_output=True,
        )
        yield result
    finally:
        if s3_state:
            s3.down(s3_state)
        chain.down(chain_state)
