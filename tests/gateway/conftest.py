"""The real stack of the gateway tests (session scope): anvil with the Nevermined contracts, SeaweedFS,
two provider gateways as separate processes (the coordinator provider's, a data provider's with a local
and an S3 dataset), and the consumer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from gatewaystack import Consumer, Gateway, start_gateway, stop_gateway

from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import chain


@pytest.fixture(scope="session")
def gw_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """anvil with the contracts deployed and the consumer funded, stopped by pid at the end."""
    state = chain.up(tmp_path_factory.mktemp("gw-chain"), None)
    try:
        yield state
    finally:
        chain.down(state)


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Digits split IID over two data providers."""
    return data.partition(tmp_path_factory.mktemp("gw-data"), 2, scheme="iid", seed=0)


@pytest.fixture(scope="session")
def s3_dataset(seaweed: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The second shard, uploaded to SeaweedFS: a dataset the gateway reads with its storage keys."""
    from airflow_nevermined_fl.devtools.devstack import s3

    key = f"datasets/{uuid.uuid4().hex[:12]}/provider-2.npz"
    s3.client(seaweed).upload_file(manifest["providers"][1]["path"], seaweed["bucket"], key)
    return f"s3://{seaweed['bucket']}/{key}"


@pytest.fixture(scope="session")
def coordinator_gw(
    tmp_path_factory: pytest.TempPathFactory, gw_chain: dict[str, Any], seaweed: dict[str, Any]
) -> Iterator[Gateway]:
    services = [{"name": "coordinator", "type": "fl-coordinator", "price": 10}]
    directory = tmp_path_factory.mktemp("gw-coordinator")
    gateway = start_gateway(directory, "coordinator", chain.COORDINATOR_PROVIDER, gw_chain, seaweed, services)
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


@pytest.fixture(scope="session")
def data_gw(
    tmp_path_factory: pytest.TempPathFactory,
    gw_chain: dict[str, Any],
    seaweed: dict[str, Any],
    manifest: dict[str, Any],
    s3_dataset: str,
) -> Iterator[Gateway]:
    services = [
        {
            "name": "provider-1",
            "type": "fl-participant",
            "price": "5",
            "dataset": manifest["providers"][0]["path"],
        },
        {"name": "provider-1-s3", "type": "fl-participant", "price": "7.5", "dataset": s3_dataset},
    ]
    directory = tmp_path_factory.mktemp("gw-provider-1")
    gateway = start_gateway(directory, "provider-1", chain.DATA_PROVIDERS[0], gw_chain, seaweed, services)
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


@pytest.fixture(scope="session")
def consumer(gw_chain: dict[str, Any], seaweed: dict[str, Any]) -> Consumer:
    return Consumer(gw_chain, seaweed)


@pytest.fixture
def session_id() -> str:
    return f"gw-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def secrets_of(seaweed: dict[str, Any]) -> list[str]:
    """Every secret the stack handed out (account keys both spellings, S3 keys): never in any answer."""
    keys = [chain.account(i).key.hex().removeprefix("0x") for i in range(6)]
    return [*keys, *("0x" + k for k in keys), seaweed["access_key"], seaweed["secret_key"]]
