"""Workload specs and a provider config with every option, shared by the Kubernetes tests."""

from __future__ import annotations

import json
from typing import Any

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.gateway.launchers import Labels, WorkloadSpec

IMAGE = f"{ddo.RUNTIME_IMAGE}:0.1.0"
SECRET = "s3-secret-value-never-in-a-pod-spec"
STORAGE = {"bucket": "nvfl", "prefix": "sessions/0xa1", "endpoint": "http://10.0.0.5:8333"}

# Every provider option set (dataset volume: host path; the PVC variant is derived in the tests).
FULL_CONFIG: dict[str, Any] = {
    "service_type": "NodePort",
    "advertised_host": "203.0.113.7",
    "resources": {
        "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": 2, "memory": "1Gi", "nvidia.com/gpu": "1"},
    },
    "node_selector": {"nvfl/data": "true", "kubernetes.io/arch": "amd64"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "fl", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "toleration_seconds": 30,
        },
        {"operator": "Exists"},
    ],
    "service_account": "fl-runner",
    "image_pull_secrets": ["regcred", "mirror.example-cred"],
    "image_pull_policy": "IfNotPresent",
    "dataset_volume": {"host_path": "/srv/fl-data"},
    "active_deadline_seconds": 7200,
    "load_balancer_timeout": 120,
    "grace_period_seconds": 3,
}


def labels(role: str = "participant", name: str = "provider-1", run_id: str | None = None) -> Labels:
    return Labels(
        dag_id="fl_session",
        run_id=run_id or "manual__2026-11-27T23:20:00.123456+00:00",
        task_id="start_coordinator" if role == "coordinator" else "start_participants",
        role=role,  # type: ignore[arg-type]
        name=name,
    )


def coordinator_spec(**overrides: Any) -> WorkloadSpec:
    """What StartCoordinatorOperator asks for: config file, two named ports, S3 keys as secret env."""
    return WorkloadSpec(
        **{
            "labels": labels("coordinator", "coordinator"),
            "module": ddo.COORDINATOR_MODULE,
            "args": ["--config", "{workdir}/session.json", "--status-file", "{workdir}/status-port"],
            "ports": {"grpc": 50051, "status": 50052},
            "files": {"session.json": json.dumps({"session_id": "s1", "rounds": 3, "storage": STORAGE})},
            "secret_env": {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": SECRET},
            "image": IMAGE,
            **overrides,
        }
    )


def participant_spec(data: str = "/srv/fl-data/provider-1.npz", **overrides: Any) -> WorkloadSpec:
    """What a participant's gateway asks for: no ports, the coordinator's certificate, its seat ticket
    (secret file), its dataset (a path, or a granted URL: a secret file)."""
    return WorkloadSpec.participant(
        **{
            "labels": labels("participant", "provider-1"),
            "module": ddo.PARTICIPANT_MODULE,
            "coordinator": "nvfl-x.fl.svc:50051",
            "cert_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "ticket": "0x" + "ab" * 20 + "." + "cd" * 65,
            "dataset": data,
            "options": {"model": "softmax", "heartbeat": 1.0},
            "secret_env": {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": SECRET},
            "image": IMAGE,
            **overrides,
        }
    )
