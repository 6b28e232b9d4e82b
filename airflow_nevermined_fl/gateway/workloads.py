"""What a gateway launches for a verified compute request: the coordinator, or one participant.

A plan holds what the checked workflow DDOs ask for; its ``spec`` is the workload on the secure session
channel (:mod:`.channel`): grants on this gateway's storage, its key's seat ticket and, for a participant,
its own dataset. The consumer names none of them; no workload gets a storage key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_nevermined_fl.gateway.channel import (
    coordinator_files,
    coordinator_grants,
    data_grant,
    grant_seconds,
    key_pair,
)
from airflow_nevermined_fl.gateway.launchers import Labels, Launcher, WorkloadSpec
from airflow_nevermined_fl.gateway.policy import image, limits
from airflow_nevermined_fl.gateway.resources import Provider
from airflow_nevermined_fl.runtime.channel import certificate_fingerprint, issue
from airflow_nevermined_fl.runtime.config import (
    ChannelSpec,
    ModelSpec,
    SeatSpec,
    SessionConfig,
    StorageSpec,
    strategy_spec,
)
from airflow_nevermined_fl.runtime.storage import upload_limit
from airflow_nevermined_fl.runtime.workload import Role

LINGER = 600
"""Seconds a finished coordinator keeps serving its final status (for the consumer to read)."""


def session_prefix(agreement_id: str) -> str:
    """Storage prefix of a session's weights and final model: its coordinator agreement's id (unique on
    chain and verified by the coordinator's gateway), never the consumer-chosen session id, so that two
    sessions never share an object."""
    return f"sessions/{agreement_id}"


def coordinator_config(
    parameters: dict[str, Any],
    storage_endpoint: str,
    bucket: str,
    initial_model: str | None,
    seats: tuple[SeatSpec, ...],
    prefix: str,
) -> SessionConfig:
    """The coordinator's session config from its DDO's parameters and its seats (public: no credentials);
    its ports are the launcher's (:meth:`WorkloadSpec.coordinator`)."""
    return SessionConfig(
        session_id=parameters["sessionId"],
        rounds=parameters["rounds"],
        epochs=parameters["epochs"],
        min_participants=parameters["minParticipants"],
        fraction=parameters["participantsRatio"],
        heartbeat_period=float(parameters["heartbeat"]),
        stall_timeout=parameters["stallTimeout"],
        storage=StorageSpec(bucket, prefix, storage_endpoint),
        model=ModelSpec.of(parameters["model"]),
        initial_model=initial_model,
        linger=LINGER,
        channel=ChannelSpec(seats=seats),
        strategy=strategy_spec(parameters.get("strategy"), "parameters.strategy"),
    )


def module_of(entrypoint: str) -> str:
    """The runtime module of a DDO container entrypoint ``python -m <module>``; ValueError otherwise."""
    parts = entrypoint.split() if isinstance(entrypoint, str) else []
    if parts[:2] != ["python", "-m"] or len(parts) != 3:
        raise ValueError(f"unsupported container entrypoint {entrypoint!r}: expected 'python -m <module>'")
    return parts[2]


def labels(gateway: str, agreement_id: str, role: Role, name: str) -> Labels:
    """A gateway's workload labels: one run per agreement."""
    return Labels(dag_id=f"gw-{gateway}", run_id=agreement_id, task_id="execute", role=role, name=name)


@dataclass(frozen=True)
class CoordinatorPlan:
    """The coordinator of a session, as its workflow DDO describes it, with the seats of its data
    providers (their addresses and declared rows, from their asset DDOs)."""

    role: ClassVar[Role] = "coordinator"
    container: dict[str, Any]
    parameters: dict[str, Any]
    initial_model: str | None
    seats: tuple[SeatSpec, ...]
    prefix: str

    @property
    def session_timeout(self) -> float:
        return float(self.parameters["sessionTimeout"])

    def spec(self, launcher: Launcher, labels: Labels, provider: Provider) -> WorkloadSpec:
        """The coordinator with a fresh TLS key pair and grants on this provider's storage, no key."""
        storage, seconds = provider.config.storage, grant_seconds(self.session_timeout)
        session_id = self.parameters["sessionId"]
        upload_bytes = upload_limit(ModelSpec.of(self.parameters["model"]))
        grants = coordinator_grants(
            provider.s3, storage.bucket, self.prefix, self.seats, seconds, self.initial_model, upload_bytes
        )
        files, secret_files = coordinator_files(key_pair(session_id, seconds), grants)
        config = coordinator_config(
            self.parameters, storage.endpoint_url, storage.bucket, self.initial_model, self.seats, self.prefix
        )
        module = module_of(self.container["entrypoint"])
        policy = provider.config.service(labels.name).policy
        return WorkloadSpec.coordinator(
            launcher,
            labels,
            config,
            module,
            files,
            image=image(policy, self.container, launcher.backend),
            secret_files=secret_files,
            limits=limits(policy),
        )


@dataclass(frozen=True)
class ParticipantPlan:
    """One participant on this gateway's dataset, joining the coordinator its provider announced."""

    role: ClassVar[Role] = "participant"
    container: dict[str, Any]
    session_id: str
    coordinator_url: str
    coordinator_cert: str
    model: dict[str, Any]
    heartbeat: float
    session_timeout: float
    rounds: int
    dataset: str = field(repr=False)
    proximal_mu: float | None = None  # FedProx's, from the coordinator's parameters

    def spec(self, launcher: Launcher, labels: Labels, provider: Provider) -> WorkloadSpec:
        """The participant with its seat ticket (signed with this provider's key) and its data: the local
        path, or a grant of the S3 object (no key)."""
        ticket = issue(
            provider.config.private_key(), self.session_id, certificate_fingerprint(self.coordinator_cert)
        )
        dataset, policy = self.dataset, provider.config.service(labels.name).policy
        if dataset.startswith("s3://"):
            dataset = data_grant(provider.s3, dataset, grant_seconds(self.session_timeout))
        return WorkloadSpec.participant(
            labels,
            module_of(self.container["entrypoint"]),
            self.coordinator_url,
            self.coordinator_cert,
            ticket,
            dataset,
            options={
                "model": self.model["name"],
                "heartbeat": self.heartbeat,
                "num_classes": self.model.get("num_classes"),
                "proximal_mu": self.proximal_mu,
            },
            image=image(policy, self.container, launcher.backend),
            limits=limits(policy),
        )
