"""Bad provider config and bad workload specs are refused naming the field, before any API request
(proved with a recording API endpoint: zero requests), while a good one does reach the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_apiserver import FakeApiServer
from k8s_specs import coordinator_spec, participant_spec

from airflow_nevermined_fl.gateway.launchers import get_launcher
from airflow_nevermined_fl.gateway.launchers.k8s_config import KubernetesConfigError, parse

BAD_CONFIGS = [
    ({"service_type": "ExternalName"}, "extra.nvfl.service_type: 'ExternalName' is not one of"),
    ({"service_type": "clusterip"}, "extra.nvfl.service_type"),
    ({"resources": {"limits": {"cpu": "-1"}}}, "extra.nvfl.resources.limits.cpu: '-1' is negative"),
    ({"resources": {"requests": {"memory": -5}}}, "extra.nvfl.resources.requests.memory: -5 is negative"),
    (
        {"resources": {"requests": {"memory": "lots"}}},
        "extra.nvfl.resources.requests.memory: 'lots' is not a",
    ),
    ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}, "requests.cpu: request '2' exceeds"),
    ({"resources": {"request": {"cpu": "1"}}}, "extra.nvfl.resources: Additional properties"),
    (
        {"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]},
        "tolerations[0].value: must be empty",
    ),
    ({"tolerations": [{"operator": "Equal", "value": "x"}]}, "tolerations[0].operator: must be 'Exists'"),
    ({"tolerations": [{"key": "a", "effect": "NoSchedule", "toleration_seconds": 5}]}, "toleration_seconds"),
    ({"tolerations": [{"key": "a", "effect": "Sometimes"}]}, "extra.nvfl.tolerations[0].effect"),
    ({"tolerations": {"key": "a"}}, "extra.nvfl.tolerations: {'key': 'a'} is not of type 'array'"),
    ({"node_selector": {"bad key!": "x"}}, "extra.nvfl.node_selector"),
    ({"node_selector": {"zone": "not valid!"}}, "extra.nvfl.node_selector.zone"),
    ({"service_account": "Not_A_Name"}, "extra.nvfl.service_account"),
    ({"image_pull_secrets": "regcred"}, "extra.nvfl.image_pull_secrets"),
    ({"image_pull_policy": "Sometimes"}, "extra.nvfl.image_pull_policy"),
    (
        {"dataset_volume": {"host_path": "/a", "pvc": "b"}},
        "dataset_volume: give exactly one of host_path or pvc",
    ),
    ({"dataset_volume": {"pvc": "b"}}, "dataset_volume.mount_path: required with pvc"),
    ({"dataset_volume": {"host_path": "relative"}}, "extra.nvfl.dataset_volume.host_path"),
    ({"active_deadline_seconds": 0}, "extra.nvfl.active_deadline_seconds: 0 is less than the minimum"),
    ({"grace_period_seconds": -1}, "extra.nvfl.grace_period_seconds"),
    ({"advertised_host": "http://x"}, "extra.nvfl.advertised_host"),
    ({"replicas": 3}, "extra.nvfl: Additional properties are not allowed ('replicas' was unexpected)"),
    ({"egress": [{"cidr": "s3.example", "ports": [443]}]}, "extra.nvfl.egress[0].cidr: 's3.example' is not"),
    ({"egress": [{"cidr": "10.0.0.0/8", "ports": [0]}]}, "extra.nvfl.egress[0].ports[0]: 0 is less than"),
    ({"egress": [{"cidr": "10.0.0.0/8"}]}, "extra.nvfl.egress[0]: 'ports' is a required property"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_CONFIGS, ids=[str(b) for b, _ in BAD_CONFIGS])
def test_bad_provider_config_refused_before_any_request(
    api: FakeApiServer, conn: Callable[..., str], bad: dict[str, Any], message: str
) -> None:
    conn_id = conn(**bad)
    with pytest.raises(KubernetesConfigError) as err:
        get_launcher("kubernetes", conn_id).start(coordinator_spec())
    assert message in str(err.value)
    assert f"kubernetes connection {conn_id!r}" in str(err.value)
    assert api.requests == []


def test_bad_namespace_and_non_json_extra() -> None:
    with pytest.raises(KubernetesConfigError, match=r"extra.namespace: 'Team FL' is not a valid namespace"):
        parse("c", {"namespace": "Team FL"})
    with pytest.raises(KubernetesConfigError, match=r"extra.nvfl: not valid JSON"):
        parse("c", {"nvfl": "{service_type: NodePort"})
    assert parse("c", {"nvfl": '{"service_type": "LoadBalancer"}'}).service_type == "LoadBalancer"


def test_missing_or_unknown_conn_id() -> None:
    with pytest.raises(KubernetesConfigError, match=r"^backend_conn_id: the kubernetes backend needs"):
        get_launcher("kubernetes", None)
    with pytest.raises(KubernetesConfigError, match=r"backend_conn_id: connection 'nvfl_no_such_k8s' is not"):
        get_launcher("kubernetes", "nvfl_no_such_k8s")


BAD_SPECS = [
    (coordinator_spec(image=None), "WorkloadSpec.image: the kubernetes backend needs the container image"),
    (
        participant_spec("/elsewhere/shard.npz"),
        "dataset: '/elsewhere/shard.npz' is not under the dataset volume",
    ),
    (coordinator_spec(files={"../etc/passwd": "x"}), "WorkloadSpec.files: '../etc/passwd' is not a plain"),
    (coordinator_spec(secret_env={"BAD-NAME": "x"}), "WorkloadSpec.env: 'BAD-NAME' is not a valid"),
    (coordinator_spec(ports={"GRPC_PORT": 50051}), "WorkloadSpec.ports: 'GRPC_PORT'"),
]


@pytest.mark.parametrize(
    ("spec", "message"), BAD_SPECS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_SPECS)]
)
def test_bad_spec_refused_before_any_request(
    api: FakeApiServer, conn: Callable[..., str], spec: Any, message: str
) -> None:
    launcher = get_launcher("kubernetes", conn())
    with pytest.raises(KubernetesConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        launcher.start(spec)
    assert api.requests == []


def test_local_dataset_without_volume_refused(api: FakeApiServer, conn: Callable[..., str]) -> None:
    launcher = get_launcher("kubernetes", conn(dataset_volume={}))
    with pytest.raises(KubernetesConfigError, match=r"extra.nvfl.dataset_volume: required for the local"):
        launcher.start(participant_spec("/srv/fl-data/provider-1.npz"))
    assert api.requests == []


def test_good_config_reaches_the_api(api: FakeApiServer, conn: Callable[..., str]) -> None:
    """Positive control for the zero-request assertions above: a valid start is seen by the endpoint."""
    get_launcher("kubernetes", conn()).start(participant_spec("s3://nvfl/shard.npz"))
    assert ("POST", "/api/v1/namespaces/fl/pods") in api.requests
