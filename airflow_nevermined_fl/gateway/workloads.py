"""What a gateway launches for a verified compute request: the coordinator, or one participant.

A plan holds what the checked workflow DDOs ask for; its ``spec`` is the workload with this gateway's
own storage (secret env) and, for a participant, its own dataset: the consumer never names either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_nevermined_fl.gateway.config import StorageConfig
from airflow_nevermined_fl.gateway.launchers import Labels, Launcher, WorkloadSpec
from airflow_nevermined_fl.runtime.config import ModelSpec, SessionConfig, StorageSpec
from airflow_nevermined_fl.runtime.workload import Role

LINGER = 600
"""Seconds a finished coordinator keeps serving its final status (for the consumer to read)."""


def session_prefix(session_id: str) -> str:
    """Storage prefix of a session's weights and final model."""
    return f"sessions/{session_id}"


def coordinator_config(
    parameters: dict[str, Any], storage_endpoint: str, bucket: str, initial_model: str | None
) -> SessionConfig:
    """The coordinator's session config from its DDO's parameters (public: no credentials); its ports are
    the launcher's (:meth:`WorkloadSpec.coordinator`)."""
    return SessionConfig(
        session_id=parameters["sessionId"],
        rounds=parameters["rounds"],
        epochs=parameters["epochs"],
        min_participants=parameters["minParticipants"],
        fraction=parameters["participantsRatio"],
        heartbeat_period=float(parameters["heartbeat"]),
        stall_timeout=parameters["stallTimeout"],
        storage=StorageSpec(bucket, session_prefix(parameters["sessionId"]), storage_endpoint),
        model=ModelSpec.of(parameters["model"]),
        initial_model=initial_model,
        linger=LINGER,
    )


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
        config = coordinator_config(self.parameters, storage.endpoint_url, storage.bucket, self.initial_model)
        return WorkloadSpec.coordinator(
            launcher,
            labels,
            config,
            module_of(self.container["entrypoint"]),
            image=image_of(self.container),
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
        return WorkloadSpec.participant(
            labels,
            module_of(self.container["entrypoint"]),
            self.coordinator_url,
            self.dataset,
            self.session_storage["url"],
            options={
                "s3_endpoint": self.session_storage["endpoint_url"],
                "model": self.model["name"],
                "heartbeat": self.heartbeat,
                "num_classes": self.model.get("num_classes"),
            },
            image=image_of(self.container),
            secret_env=storage.runtime_env(),
        )
