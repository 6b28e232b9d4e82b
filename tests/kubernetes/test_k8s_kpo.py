"""The backend's pods render through the cncf-kubernetes provider's own KubernetesPodOperator
(``dry_run()``): nothing of ours is lost in its pod building, and what it builds is schema-valid."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from k8s_specs import FULL_CONFIG, coordinator_spec, participant_spec
from kubernetes.client import ApiClient
from kubernetes_validate.utils import latest_version

from airflow_nevermined_fl.gateway.launchers import k8s_manifests as m
from airflow_nevermined_fl.gateway.launchers.k8s_config import parse


def kpo(pod: dict[str, Any]) -> KubernetesPodOperator:
    return KubernetesPodOperator(
        task_id="render",
        full_pod_spec=PodGenerator.deserialize_model_dict(pod),
        namespace=pod["metadata"]["namespace"],
        name=pod["metadata"]["name"],
        random_name_suffix=False,
    )


@pytest.mark.parametrize("spec", [coordinator_spec(), participant_spec()], ids=["coordinator", "participant"])
def test_kpo_dry_run_renders_our_pod(spec: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pod = m.pod(spec, parse("nvfl_k8s_test", {"namespace": "fl", "nvfl": FULL_CONFIG}))
    operator = kpo(pod)
    operator.dry_run()
    out = capsys.readouterr().out  # a log line, then the pod's python-side (snake_case) dict as YAML
    rendered = yaml.safe_load(out[out.index("api_version: v1") :])
    assert rendered["metadata"]["name"] == pod["metadata"]["name"]
    assert pod["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
    assert rendered["metadata"]["annotations"] == pod["metadata"]["annotations"]
    ours, theirs = pod["spec"]["containers"][0], rendered["spec"]["containers"][0]
    assert theirs["name"] == m.CONTAINER == ours["name"]
    for key, snake in (
        ("image", "image"),
        ("command", "command"),
        ("args", "args"),
        ("resources", "resources"),
    ):
        assert theirs[snake] == ours[key]
    assert rendered["spec"]["tolerations"][1]["toleration_seconds"] == 30
    assert rendered["spec"]["active_deadline_seconds"] == FULL_CONFIG["active_deadline_seconds"]
    assert rendered["spec"]["restart_policy"] == "Never"
    # what KPO builds (API form) is valid against the current schema too
    built = ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(dry_run=True))
    kubernetes_validate.validate(built, latest_version(), strict=True)
    assert built["spec"]["containers"][0]["envFrom"] == ours["envFrom"]
