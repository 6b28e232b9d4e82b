"""Provider gateways whose backend is a Kubernetes cluster (the fake API server): the devstack starts the four
on it (each data provider's shard uploaded to S3, since pods see no gateway's files), every config validates
and every gateway reports its backend healthy and its service ready; a kubernetes backend without its
connection is refused up front; a launch the backend refuses names no dataset location to the consumer.
The sessions themselves run on a real cluster: ``tests/dag/test_session_dag_kubernetes.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fake_apiserver import FakeApiServer
from k8s_specs import IMAGE

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.devtools.devstack import chain, gateways
from airflow_nevermined_fl.gateway.app import BACKEND_CONN_ID, launcher_for
from airflow_nevermined_fl.gateway.channel import key_pair
from airflow_nevermined_fl.gateway.checks import Refusal
from airflow_nevermined_fl.gateway.config import GatewayConfigError, load, parse
from airflow_nevermined_fl.gateway.executions import Executions
from airflow_nevermined_fl.gateway.workloads import ParticipantPlan
from airflow_nevermined_fl.protocol.client import GatewayClient

HIDDEN_DATASET = "/srv/provider-only/shard.npz"


@pytest.fixture
def connection(api: FakeApiServer, tmp_path: Path) -> dict[str, Any]:
    """The providers' cluster connection (Airflow JSON form), as a gateway config carries it."""
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig.json"))
    nvfl = {"service_type": "NodePort", "advertised_host": "203.0.113.7"}
    return {
        "conn_type": "kubernetes",
        "extra": {"kube_config_path": kubeconfig, "namespace": "fl", "nvfl": nvfl},
    }


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``launcher_for`` puts the backend connection in this process's environment: removed afterwards."""
    monkeypatch.delenv(f"AIRFLOW_CONN_{BACKEND_CONN_ID.upper()}", raising=False)


@pytest.fixture
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = chain.up(tmp_path_factory.mktemp("k8s-gw-chain"), None)
    try:
        yield state
    finally:
        chain.down(state)


def test_devstack_gateways_on_a_cluster(
    tmp_path: Path, devchain: dict[str, Any], seaweed: dict[str, Any], connection: dict[str, Any]
) -> None:
    state = gateways.start(tmp_path, devchain, seaweed, "kubernetes", suffix="-k8s", connection=connection)
    try:
        for name, entry in state["gateways"].items():
            config = load(entry["config_file"])  # what `nvfl gateway serve` accepted
            assert (config.backend, config.backend_connection) == ("kubernetes", connection)
            (service,) = config.services
            if service.type == "fl-participant":
                assert service.dataset == f"s3://{seaweed['bucket']}/datasets/{name}/{gateways.DATASET}"
            info = GatewayClient(entry["url"], audience=entry["address"]).info()
            assert info["backend"] == {"type": "kubernetes", "healthy": True}
            assert [(s["ready"], s["reason"]) for s in info["services"]] == [
                (True, None)
            ]  # e.g. the dataset is on S3
    finally:
        gateways.down(state)


def test_a_cluster_backend_needs_its_connection(tmp_path: Path, seaweed: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="kubernetes: needs the cluster's connection"):
        gateways.start(tmp_path, {}, seaweed, "kubernetes")
    with pytest.raises(ValueError, match="local: takes no connection"):
        gateways.start(tmp_path, {}, seaweed, "local", connection={"conn_type": "kubernetes"})
    document = _document(tmp_path, {"type": "kubernetes"})
    with pytest.raises(GatewayConfigError, match=r"^backend.connection: required for kubernetes"):
        parse(document)


def _document(directory: Path, backend: dict[str, Any]) -> dict[str, Any]:
    """A data provider's gateway config on ``backend``, its dataset a path only this machine has."""
    gateways.write_secret(directory / "key", chain.account(chain.DATA_PROVIDERS[0]).key.to_0x_hex())
    gateways.write_secret(directory / "storage.json", json.dumps({"access_key": "AK", "secret_key": "SK"}))
    (provider,) = [p for p in gateways.PROVIDERS if p.name == "provider-1"]
    chain_state = {"rpc_url": "http://127.0.0.1:1", "deployment_file": "/nonexistent", "chain_id": 31337}
    s3_state = {"endpoint": "http://127.0.0.1:1", "bucket": "nvfl"}
    return gateways.config_document(directory, provider, 0, backend, chain_state, s3_state, HIDDEN_DATASET)


def test_a_refused_launch_names_no_dataset_location(
    api: FakeApiServer, tmp_path: Path, connection: dict[str, Any], gateway_env: None
) -> None:
    """The cluster cannot mount a local dataset path (no ``dataset_volume``): the consumer's answer says why,
    without the path; nothing is created."""
    config = parse(_document(tmp_path, {"type": "kubernetes", "connection": connection}))
    executions = Executions(SimpleNamespace(config=config), launcher_for(config))  # type: ignore[arg-type]
    plan = ParticipantPlan(
        container={
            "entrypoint": f"python -m {ddo.PARTICIPANT_MODULE}",
            "image": IMAGE.split(":")[0],
            "tag": IMAGE.split(":")[1],  # the image the policy allows: the cluster's refusal is tested
        },
        session_id="s-1",
        coordinator_url="203.0.113.7:30001",
        coordinator_cert=key_pair("s-1", 600).cert_pem,
        model={"name": "softmax", "num_classes": 10},
        heartbeat=1.0,
        session_timeout=600,
        rounds=1,
        dataset=HIDDEN_DATASET,
    )
    order = SimpleNamespace(
        service=config.services[0],
        agreement=SimpleNamespace(agreement_id="0x" + "1" * 64, consumer="0x" + "2" * 40),
        plan=plan,
    )
    with pytest.raises(Refusal) as refused:
        executions._launch(order)  # type: ignore[arg-type]
    assert refused.value.status == 503 and "extra.nvfl.dataset_volume: required" in refused.value.detail
    assert HIDDEN_DATASET not in refused.value.detail
    assert [method for method, _ in api.requests if method != "GET"] == []
    assert executions.records.ids() == []
