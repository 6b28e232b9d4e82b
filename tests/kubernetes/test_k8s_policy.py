"""A service's policy on the Kubernetes backend: its limits become the pod's requests/limits (unless the
provider's connection sets resources) and bound its deadline; the pod runs the pinned ``repo@sha256``
image. Manifests validated against the Kubernetes OpenAPI schema like every other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from k8s_specs import coordinator_spec, participant_spec
from test_k8s_manifests import config, validate

from airflow_nevermined_fl.gateway.config import GatewayConfigError, parse
from airflow_nevermined_fl.gateway.launchers import k8s_manifests as m
from airflow_nevermined_fl.gateway.launchers.base import Limits

PINNED = "registry.example/nvfl/runtime@sha256:" + "ab" * 32
LIMITS = Limits(cpus=1.5, memory_mb=1024, pids=256, wall_time=3600)


def test_policy_limits_are_the_pods_resources_and_bound_its_deadline() -> None:
    specs = (coordinator_spec(limits=LIMITS, image=PINNED), participant_spec(limits=LIMITS, image=PINNED))
    for spec in specs:
        pod = m.pod(spec, config(resources={}))
        validate(pod)
        (container,) = pod["spec"]["containers"]
        assert container["image"] == PINNED
        assert container["resources"] == {
            "requests": {"cpu": "150m", "memory": "103Mi"},
            "limits": {"cpu": "1500m", "memory": "1024Mi"},
        }
        assert pod["spec"]["activeDeadlineSeconds"] == 3600
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_connections_resources_win_and_a_longer_deadline_is_kept_short() -> None:
    pod = m.pod(coordinator_spec(limits=LIMITS), config(active_deadline_seconds=600))
    validate(pod)
    assert pod["spec"]["containers"][0]["resources"] == config().resources
    assert pod["spec"]["activeDeadlineSeconds"] == 600


def test_kubernetes_pins_are_digests(tmp_path: Path) -> None:
    service = {"name": "c", "type": "fl-coordinator", "price": "1"}
    document = {
        "name": "g",
        "key_file": "/k",
        "chain": {"rpc_url": "http://127.0.0.1:1", "deployment_file": "/d"},
        "state_dir": str(tmp_path),
        "storage": {"endpoint_url": "http://127.0.0.1:2", "bucket": "b", "credentials_file": "/c"},
        "backend": {"type": "kubernetes", "connection": {"conn_type": "kubernetes"}},
    }
    pinned = {"images": {"airflow-nevermined-fl-runtime:0.1.0": PINNED}}
    assert parse(document | {"services": [service | {"policy": pinned}]}).services[0].policy.images == {
        "airflow-nevermined-fl-runtime:0.1.0": PINNED
    }
    by_id = {"images": {"airflow-nevermined-fl-runtime:0.1.0": "sha256:" + "ab" * 32}}
    rule = "services[0].policy.images.airflow-nevermined-fl-runtime:0.1.0: kubernetes pins"
    with pytest.raises(GatewayConfigError, match=re.escape(rule)):
        parse(document | {"services": [service | {"policy": by_id}]})
