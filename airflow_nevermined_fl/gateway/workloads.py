"""What a gateway launches for a verified compute request: the coordinator, or one participant.

A plan holds what the checked workflow DDOs ask for; its ``spec`` is the workload with this gateway's
own storage (secret env) and, for a participant, its own dataset: the consumer never names either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_nevermined_fl.gateway.config import StorageConfig
from airflow_nevermined_fl.launchers import Labels, Launcher, WorkloadSpec
from airflow_nevermined_fl.launchers.base import Role

LINGER = 600
"""Seconds a finished coordinator keeps serving its final status (for the consumer to read)."""


def session_prefix(session_id: str) -> str:
    """Storage prefix of a session's weights and final model."""
    return f"sessions/{session_id}"


def coordinator_config(
    parameters: dict[str, Any],
    grpc: tuple[str, int],
    status: tuple[str, int],
    storage_endpoint: str,
    bucket: str,
    initial_model: str | None,
) -> dict[str, Any]:
    """The coordinator's session config, rendered from its DDO's parameters (public: no credentials)."""
    heartbeat = float(parameters["heartbeat"])
    config = {
        "session_id": parameters["sessionId"],
        "rounds": parameters["rounds"],
        "epochs": parameters["epochs"],
        "min_participants": parameters["minParticipants"],
        "fraction": parameters["participantsRatio"],
        "heartbeat_period": heartbeat,
        "heartbeat_timeout": max(5.0, 5 * heartbeat),
        "stall_timeout": parameters["stallTimeout"],
        "grpc_host": grpc[0],
        "grpc_port": grpc[1],
        "status_host": status[0],
        "status_port": status[1],
        "storage": {
            "endpoint": storage_endpoint,
            "bucket": bucket,
            "prefix": session_prefix(parameters["sessionId"]),
        },
        "model": parameters["model"] if parameters["model"]["name"] == "softmax" else {"name": "custom"},
        "linger": LINGER,
    }
    return {**config, "initial_model": initial_model} if initial_model else config


def module_of(entrypoint: str) -> str:
    """The runtime module of a DDO container entrypoint ``python -m <module>``; ValueError otherwise."""
    parts = entrypoint.split() if isinstance(entrypoint, str) else []
    if parts[:2] != ["python", "-m"] or len(parts) != 3:
        raise ValueError(f"unsupported container entrypoint {entrypoint!r}: expected 'python -m <module>'")
    return parts[2]


def image_of(container: dict[str, Any]) -> str:
    """``name:tag`` of a DDO container (what container backends run)."""
    return f"{container['image']}:{container['tag']}"


def labels(gateway: str, agreement_id: str, role: Role, name: str) -> Labels:
    """A gateway's workload labels: one run per agreement."""
    return Labels(dag_id=f"gw-{gateway}", run_id=agreement_id, task_id="execute", role=role, name=name)


@dataclass(frozen=True)
class CoordinatorPlan:
    """The coordinator of a session, as its workflow DDO describes it."""

    role: ClassVar[Role] = "coordinator"
    container: dict[str, Any]
    parameters: dict[str, Any]
    initial_model: str | None

    def session_storage(self, storage: StorageConfig) -> dict[str, str]:
        """Where the session's weights go (the consumer hands it to the participants)."""
        prefix = session_prefix(self.parameters["sessionId"])
        return {"endpoint_url": storage.endpoint_url, "url": f"s3://{storage.bucket}/{prefix}"}

    def spec(self, launcher: Launcher, labels: Labels, storage: StorageConfig) -> WorkloadSpec:
        grpc_port, status_port = launcher.free_port(), launcher.free_port()
        config = coordinator_config(
            self.parameters,
            (launcher.bind_host, grpc_port),
            (launcher.bind_host, status_port),
            storage.endpoint_url,
            storage.bucket,
            self.initial_model,
        )
        return WorkloadSpec(
            labels=labels,
            module=module_of(self.container["entrypoint"]),
            image=image_of(self.container),
            args=["--config", "{workdir}/session.json", "--status-file", "{workdir}/status-port"],
            ports={"grpc": grpc_port, "status": status_port},
            files={"session.json": json.dumps(config, indent=2)},
            secret_env=storage.runtime_env(),
        )


@dataclass(frozen=True)
class ParticipantPlan:
    """One participant on this gateway's dataset, joining the coordinator the consumer announced."""

    role: ClassVar[Role] = "participant"
    container: dict[str, Any]
    coordinator_url: str
    session_storage: dict[str, str]
    model: dict[str, Any]
    heartbeat: float
    dataset: str = field(repr=False)

    def spec(self, launcher: Launcher, labels: Labels, storage: StorageConfig) -> WorkloadSpec:
        num_classes = ["--num-classes", str(self.model["num_classes"])] if "num_classes" in self.model else []
        return WorkloadSpec(
            labels=labels,
            module=module_of(self.container["entrypoint"]),
            image=image_of(self.container),
            args=[
                "--coordinator",
                self.coordinator_url,
                "--data",
                self.dataset,
                "--storage",
                self.session_storage["url"],
                "--s3-endpoint",
                self.session_storage["endpoint_url"],
                "--model",
                self.model["name"],
                "--heartbeat",
                str(self.heartbeat),
                *num_classes,
            ],
            secret_env=storage.runtime_env(),
        )
