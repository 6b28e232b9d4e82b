"""Every manifest the Kubernetes backend generates, validated against the Kubernetes OpenAPI schema
(``kubernetes-validate``, strict: unknown fields are errors) of the newest version it ships."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any

import kubernetes_validate
import pytest
from k8s_specs import FULL_CONFIG, IMAGE, SECRET, coordinator_spec, labels, participant_spec
from kubernetes_validate.utils import latest_version

from airflow_nevermined_fl.gateway.launchers import k8s_manifests as m
from airflow_nevermined_fl.gateway.launchers.k8s_config import (
    DNS_LABEL,
    LABEL_KEY,
    LABEL_VALUE,
    ProviderConfig,
    parse,
)

K8S_VERSION = latest_version()


def config(**overrides: Any) -> ProviderConfig:
    return parse("nvfl_k8s_test", {"namespace": "fl", "nvfl": {**FULL_CONFIG, **overrides}})


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    meta = manifest["metadata"]
    assert re.fullmatch(DNS_LABEL, meta["name"]) and len(meta["name"]) <= 63 and meta["name"][0].isalpha()
    for key, value in meta["labels"].items():
        assert re.fullmatch(LABEL_KEY, key) and re.fullmatch(LABEL_VALUE, value) and len(value) <= 63


def test_schema_version_is_current() -> None:
    major, minor = (int(x) for x in K8S_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33), K8S_VERSION


def test_validator_rejects_a_broken_manifest() -> None:
    """Negative control: the strict validator catches a wrong type and an unknown field."""
    pod = m.pod(coordinator_spec(), config())
    broken = copy.deepcopy(pod)
    broken["spec"]["containers"][0]["ports"][0]["containerPort"] = "fifty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    unknown = copy.deepcopy(pod)
    unknown["spec"]["nodeSelectorz"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)


def test_coordinator_pod_every_option() -> None:
    cfg = config()
    spec = coordinator_spec()
    pod = m.pod(spec, cfg)
    validate(pod)
    ps, container = pod["spec"], pod["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-u", "-m", spec.module]
    assert container["args"] == [
        "--config",
        "/nvfl/work/session.json",
        "--status-file",
        "/nvfl/work/status-port",
    ]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == spec.ports
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "status", "scheme": "HTTPS"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert ps["serviceAccountName"] == "fl-runner"
    assert ps["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror.example-cred"}]
    assert ps["nodeSelector"] == FULL_CONFIG["node_selector"]
    assert ps["tolerations"][1]["tolerationSeconds"] == 30
    assert ps["restartPolicy"] == "Never" and ps["activeDeadlineSeconds"] == 7200
    assert ps["automountServiceAccountToken"] is False
    assert pod["metadata"]["namespace"] == "fl"
    # the coordinator reads no dataset: no dataset volume
    assert [v["name"] for v in ps["volumes"]] == ["work", "files"]
    lab = pod["metadata"]["labels"]
    assert lab[m.L_ROLE] == "coordinator" and lab[m.L_DAG] == "fl_session"
    assert lab[m.L_RUN] == spec.labels.run_key()
    assert pod["metadata"]["annotations"][m.A_RUN] == spec.labels.run_id


def test_secrets_only_in_the_secret() -> None:
    cfg = config()
    spec = coordinator_spec()
    for manifest in (m.pod(spec, cfg), m.service(spec, cfg), m.config_map(spec, cfg)):
        assert SECRET not in json.dumps(manifest)
    secret = m.secret(spec, cfg)
    validate(secret)
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == SECRET
    pod = m.pod(spec, cfg)
    assert pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert "session.json" in m.config_map(spec, cfg)["data"]
    validate(m.config_map(spec, cfg))


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_service_each_type(service_type: str) -> None:
    cfg = config(service_type=service_type)
    spec = coordinator_spec()
    pod = m.pod(spec, cfg)
    svc = m.service(
        spec, cfg, m.owner_reference(pod["metadata"]["name"], "0b1c2d3e-0000-4000-8000-000000000001")
    )
    validate(svc)
    assert svc["spec"]["type"] == service_type
    # the selector picks exactly this workload's pod
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"grpc": "grpc", "status": "status"}
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "Pod"


def test_service_endpoints_per_type() -> None:
    spec = coordinator_spec()
    cluster_ip = m.service(spec, config(service_type="ClusterIP"))
    name = cluster_ip["metadata"]["name"]
    assert m.service_endpoints(cluster_ip, None) == {
        "grpc": f"{name}.fl.svc:50051",
        "status": f"{name}.fl.svc:50052",
    }
    node_port = m.service(spec, config(service_type="NodePort"))
    assert m.service_endpoints(node_port, "203.0.113.7") is None  # node ports not assigned yet
    node_port["spec"]["ports"][0]["nodePort"], node_port["spec"]["ports"][1]["nodePort"] = 30051, 30052
    assert m.service_endpoints(node_port, "203.0.113.7") == {
        "grpc": "203.0.113.7:30051",
        "status": "203.0.113.7:30052",
    }
    lb = m.service(spec, config(service_type="LoadBalancer"))
    assert m.service_endpoints(lb, None) is None  # no ingress yet: the launcher keeps waiting
    lb["status"] = {"loadBalancer": {"ingress": [{"hostname": "fl.example.net"}]}}
    assert m.service_endpoints(lb, None) == {"grpc": "fl.example.net:50051", "status": "fl.example.net:50052"}


def test_participant_pod_host_path_dataset() -> None:
    cfg = config()
    pod = m.pod(participant_spec(), cfg)
    validate(pod)
    ps, container = pod["spec"], pod["spec"]["containers"][0]
    assert {"name": "dataset", "hostPath": {"path": "/srv/fl-data", "type": "Directory"}} in ps["volumes"]
    assert {"name": "dataset", "mountPath": "/srv/fl-data", "readOnly": True} in container["volumeMounts"]
    assert "readinessProbe" not in container and container["ports"] == []
    assert [v["name"] for v in ps["volumes"]] == ["work", "files", "secret-files", "dataset"]
    assert pod["metadata"]["labels"][m.L_ROLE] == "participant"


def test_participant_pod_pvc_dataset() -> None:
    cfg = config(dataset_volume={"pvc": "fl-shards", "mount_path": "/data"})
    pod = m.pod(participant_spec("/data/shard-1.npz"), cfg)
    validate(pod)
    claim = {"name": "dataset", "persistentVolumeClaim": {"claimName": "fl-shards", "readOnly": True}}
    assert claim in pod["spec"]["volumes"]
    assert {"name": "dataset", "mountPath": "/data", "readOnly": True} in pod["spec"]["containers"][0][
        "volumeMounts"
    ]


def test_participant_pod_s3_dataset_minimal_config() -> None:
    """Dataset fetched by the participant itself (a granted URL, in its secret files); default config."""
    cfg = parse("nvfl_k8s_test", {})
    spec = participant_spec("http://s3.example:8333/nvfl/data/provider-1.npz?X-Amz-Signature=ab")
    pod = m.pod(spec, cfg)
    validate(pod)
    assert pod["metadata"]["namespace"] == "default"
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["work", "files", "secret-files"]
    assert "X-Amz-Signature" not in json.dumps(pod) and "data-url" in spec.secret_files
    for key in ("serviceAccountName", "imagePullSecrets", "nodeSelector", "tolerations"):
        assert key not in pod["spec"]
    assert "resources" not in pod["spec"]["containers"][0]


def test_names_and_labels_of_awkward_ids() -> None:
    """Scheduled run ids (':' '+'), long dag ids and names with dots still give valid names/labels."""
    spec = participant_spec(
        "s3://b/k.npz",
        labels=labels("participant", "provider-1"),
    )
    awkward = type(spec.labels)(
        dag_id="Team.FL session/" + "x" * 80,
        run_id="scheduled__2026-11-27T00:00:00+00:00",
        task_id="group.start_participants",
        role="participant",
        name="Provider_ONE.eu",
    )
    spec.labels = awkward
    pod = m.pod(spec, parse("c", {}))
    validate(pod)
    assert pod["metadata"]["annotations"][m.A_DAG] == awkward.dag_id
    other = type(awkward)(**{**awkward.__dict__, "run_id": "scheduled__2026-11-28T00:00:00+00:00"})
    assert m.object_name(other) != m.object_name(awkward)  # one name per run
    # two providers whose long names differ only after the part that fits into the readable name
    first = labels("participant", "university-hospital-of-somewhere-a")
    second = labels("participant", "university-hospital-of-somewhere-b")
    assert first.workload_key() == second.workload_key()
    assert m.object_name(first) != m.object_name(second)


def test_secret_files_in_a_secret_of_their_own() -> None:
    """Secret files are mounted from their own Secret (the env Secret is taken whole as environment)."""
    cfg = config()
    spec = coordinator_spec(secret_files={"token": SECRET})
    pod, files = m.pod(spec, cfg), m.secret_files(spec, cfg)
    validate(pod)
    validate(files)
    assert SECRET not in json.dumps(pod) and SECRET not in json.dumps(m.config_map(spec, cfg))
    assert files["stringData"] == {"token": SECRET} and "token" not in m.secret(spec, cfg)["stringData"]
    name = files["metadata"]["name"]
    assert name != pod["metadata"]["name"] and files["metadata"]["labels"] == pod["metadata"]["labels"]
    assert {"name": "secret-files", "secret": {"secretName": name}} in pod["spec"]["volumes"]
    mount = {"name": "secret-files", "mountPath": "/nvfl/work/token", "subPath": "token", "readOnly": True}
    assert mount in pod["spec"]["containers"][0]["volumeMounts"]
    with pytest.raises(m.KubernetesConfigError, match="secret_files: 'session.json'"):
        m.check_spec(coordinator_spec(secret_files={"session.json": "x"}), cfg)


def test_dataset_is_the_specs_not_an_argument() -> None:
    """The dataset volume follows ``WorkloadSpec.dataset``; ``{dataset}`` in the args is filled in."""
    spec = participant_spec()
    assert "{dataset}" in spec.args and spec.dataset == "/srv/fl-data/provider-1.npz"
    args = m.pod(spec, config())["spec"]["containers"][0]["args"]
    assert args[args.index("--data") + 1] == spec.dataset
    no_dataset = dataclasses.replace(spec, args=["--data", "/srv/fl-data/provider-1.npz"], dataset=None)
    assert "dataset" not in [v["name"] for v in m.pod(no_dataset, config())["spec"]["volumes"]]
