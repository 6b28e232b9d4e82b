"""The provider's policy (per service): published in the asset DDO and ``info``, enforced by the gateway
before anything is launched (409 naming the rule), and what the consumer sees of a workload's output.
Attacks by a consumer who writes its own workflow DDOs: an unlisted model, a session over the bounds, an
unlisted image, and a participant (of a model the provider allowed) printing its data rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gatewaystack import Consumer, Gateway, start_gateway, stop_gateway, wait_for

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.gateway.config import GatewayConfigError, parse
from airflow_nevermined_fl.protocol import API
from airflow_nevermined_fl.protocol.client import GatewayError
from airflow_nevermined_fl.protocol.policy import Policy

MODELS = Path(__file__).resolve().parent / "models"
LEAKY = "leaky_model:Leaky"


def _refused(gateway: Gateway, client: Any, agreement: dict[str, Any], workflow: str, rule: str) -> None:
    """``execute`` answers 409 naming ``rule``, and nothing is launched or recorded."""
    with pytest.raises(GatewayError) as err:
        client.execute(agreement, workflow)
    assert err.value.status_code == 409 and rule in err.value.detail, err.value.detail
    assert gateway.nothing_launched(agreement["agreement_id"])


def test_policy_published_in_the_asset_ddo_and_info(
    coordinator_gw: Gateway, data_gw: Gateway, consumer: Consumer
) -> None:
    default = Policy().public()
    for gateway in (coordinator_gw, data_gw):
        for service in consumer.client(gateway).info()["services"]:
            assert service["policy"] == default
            asset = httpx.get(f"{gateway.endpoint}{API}/ddo/{service['did']}").json()
            assert ddo.main_block(asset)["policy"] == default


@pytest.mark.parametrize(
    ("model", "conf", "rule"),
    [
        ({"name": "subprocess:Popen"}, {}, "policy.models: 'subprocess:Popen' is not an allowed model"),
        (None, {"rounds": 1001}, "policy.bounds.rounds: 1001 is above the provider's bound 1000"),
        (None, {"epochs": 101}, "policy.bounds.epochs: 101 is above the provider's bound 100"),
        (None, {"heartbeat": 0.01}, "policy.bounds.heartbeat_min"),
        (None, {"session_timeout": 10**6}, "policy.bounds.session_timeout"),
    ],
    ids=["unlisted-model", "rounds", "epochs", "heartbeat", "session-timeout"],
)
def test_coordinator_outside_the_policy_is_refused(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
    model: dict[str, Any] | None,
    conf: dict[str, Any],
    rule: str,
) -> None:
    seats = [data_gw.asset("provider-1-s3")["did"]]
    model = model or data.softmax_model(manifest)
    workflow = consumer.coordinator_workflow(coordinator_gw, session_id, model, seats, **conf)
    agreement = consumer.agreement(coordinator_gw, "coordinator")
    _refused(coordinator_gw, consumer.client(coordinator_gw), agreement, workflow, rule)


def test_participant_with_an_unlisted_model_is_refused(
    coordinator_gw: Gateway, data_gw: Gateway, consumer: Consumer, manifest: dict[str, Any], session_id: str
) -> None:
    """The participant's own workflow names the model it runs: its gateway checks it, whatever the
    coordinator's workflow says."""
    seats = [data_gw.asset("provider-1")["did"]]
    model = data.softmax_model(manifest)
    coordinator_did = consumer.coordinator_workflow(coordinator_gw, session_id, model, seats)
    workflow = consumer.participant_workflow(
        data_gw, "provider-1", session_id, coordinator_did, {"name": "subprocess:Popen"}
    )
    agreement = consumer.agreement(data_gw, "provider-1")
    rule = "policy.models: 'subprocess:Popen' is not an allowed model"
    _refused(data_gw, consumer.client(data_gw), agreement, workflow, rule)


def test_unlisted_image_is_refused_on_a_container_backend(
    tmp_path: Path,
    gw_chain: dict[str, Any],
    seaweed: dict[str, Any],
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """On the Docker backend the workflow's image must be one the policy lists (the gateway then runs its
    pin): a consumer's own image is refused before the engine is even asked."""
    services = [{"name": "coordinator", "type": "fl-coordinator", "price": 10}]
    backend = {
        "type": "docker",
        "connection": {"conn_type": "docker", "extra": {"docker_url": "unix:///none"}},
    }
    gateway = start_gateway(
        tmp_path, "coordinator", chain.COORDINATOR_PROVIDER, gw_chain, seaweed, services, backend=backend
    )
    try:
        seats = [data_gw.asset("provider-1-s3")["did"]]
        conf = {"rounds": 1, "epochs": 1, "min_participants": 1, "fraction": 1.0, "heartbeat": 0.5}
        conf |= {"stall_timeout": 60, "session_timeout": 600, "initial_model": None}
        conf["model"] = data.softmax_model(manifest)
        main = ddo.coordinator_main(conf, session_id, consumer.address, gateway.address, seats)
        main["workflow"]["coordinator"] |= {"image": "attacker/miner", "tag": "latest"}
        workflow = consumer.publish_workflow(main, gateway.address)
        agreement = consumer.agreement(gateway, "coordinator")
        rule = "policy.images: 'attacker/miner:latest' is not an allowed image"
        _refused(gateway, consumer.client(gateway), agreement, workflow, rule)
    finally:
        stop_gateway(gateway)


@pytest.fixture
def leaky_gateways(
    tmp_path: Path,
    gw_chain: dict[str, Any],
    seaweed: dict[str, Any],
    manifest: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """A coordinator and a data provider whose policies allow the ``leaky_model:Leaky`` model (installed
    on their runtime's PYTHONPATH); the data provider keeps its default log visibility."""
    monkeypatch.setenv("PYTHONPATH", str(MODELS))
    policy = {"models": ["softmax", LEAKY]}
    coordinator = [{"name": "coordinator", "type": "fl-coordinator", "price": 10, "policy": policy}]
    participant = [
        {
            "name": "provider-1",
            "type": "fl-participant",
            "price": "5",
            "dataset": manifest["providers"][0]["path"],
            "policy": policy,
        }
    ]
    started = []
    try:
        for name, account, services in (
            ("coordinator", chain.COORDINATOR_PROVIDER, coordinator),
            ("provider-1", chain.DATA_PROVIDERS[0], participant),
        ):
            started.append(start_gateway(tmp_path / name, name, account, gw_chain, seaweed, services))
        yield started
    finally:
        for gateway in started:
            stop_gateway(gateway)


def test_participant_printing_its_rows_shows_them_to_no_consumer(
    leaky_gateways: list[Gateway], consumer: Consumer, session_id: str
) -> None:
    coordinator_gw, data_gw = leaky_gateways
    model = {"name": LEAKY}
    coordinator_did = consumer.coordinator_workflow(
        coordinator_gw, session_id, model, [data_gw.asset("provider-1")["did"]]
    )
    coordinator = consumer.agreement(coordinator_gw, "coordinator")
    coordinator_client = consumer.client(coordinator_gw)
    coordinator_client.execute(coordinator, coordinator_did)
    up = wait_for(
        lambda: (s := coordinator_client.status(coordinator["agreement_id"]))["announcement"] and s,
        60,
        "coordinator up",
    )
    consumer.annotate(
        coordinator_did, coordinatorUrl=up["coordinator_url"], coordinatorAnnouncement=up["announcement"]
    )
    workflow = consumer.participant_workflow(data_gw, "provider-1", session_id, coordinator_did, model)
    participant = consumer.agreement(data_gw, "provider-1")
    client = consumer.client(data_gw)
    client.execute(participant, workflow)
    followed = "".join(client.follow_logs(participant["agreement_id"]))  # until the participant ends
    tail = client.logs(participant["agreement_id"], tail=1000)

    (directory,) = data_gw.workload_dirs(participant["agreement_id"])
    raw = (directory / "output.log").read_text()
    rows = [line for line in raw.splitlines() if "DATA-ROW" in line]
    assert len(rows) >= 6, raw  # the attack happened: printed and logged
    for line in rows:
        row = line[line.index("[") : line.index("]") + 1]
        assert row not in followed and row not in tail
    assert "DATA-ROW" not in followed + tail
    assert "event='Rendezvous accepted'" in followed and "event='Rendezvous accepted'" in tail  # events
    stopped = coordinator_client.stop(coordinator["agreement_id"])
    assert stopped["state"] in ("finished", "stopped")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {"models": ["rm -rf /"]},
            "services[0].policy.models: 'rm -rf /': expected 'softmax' or 'module:Class'",
        ),
        (
            {"bounds": {"rounds": 0}},
            "services[0].policy.bounds.rounds: Input should be greater than or equal",
        ),
        ({"logs": {"participant": "raw"}}, "services[0].policy.logs.participant: Input should be 'none'"),
        ({"imagez": {}}, "services[0].policy.imagez: Extra inputs are not permitted"),
        ({"images": {"a:1": "latest"}}, "services[0].policy.images: a:1: expected sha256:<64 hex>"),
        ({"bounds": {"session_timeout": 10**5}}, "resources.wall_time: must exceed bounds.session_timeout"),
    ],
)
def test_a_bad_policy_is_refused_at_start_naming_the_field(
    tmp_path: Path, policy: dict[str, Any], message: str
) -> None:
    service = {"name": "c", "type": "fl-coordinator", "price": "1", "policy": policy}
    document = {
        "name": "g",
        "key_file": "/k",
        "chain": {"rpc_url": "http://127.0.0.1:1", "deployment_file": "/d"},
        "state_dir": str(tmp_path),
        "storage": {"endpoint_url": "http://127.0.0.1:2", "bucket": "b", "credentials_file": "/c"},
        "services": [service],
    }
    with pytest.raises(GatewayConfigError) as err:
        parse(document)
    assert message in str(err.value)
