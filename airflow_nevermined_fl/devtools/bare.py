"""One bare FL session (no Airflow, no chain) run through launchers: the backends' tests and bench.

The coordinator and the participants may use different launchers (a mixed session). Everything the
session started is stopped at the end, whatever happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_nevermined_fl.devtools.session_channel import GRANT_SECONDS, SessionChannel
from airflow_nevermined_fl.gateway.channel import data_grant
from airflow_nevermined_fl.gateway.launchers.base import Labels, Launcher, Workload, WorkloadSpec
from airflow_nevermined_fl.runtime import status
from airflow_nevermined_fl.runtime.config import ModelSpec, SessionConfig, StorageSpec
from airflow_nevermined_fl.runtime.workload import (
    COORDINATOR_MODULE,
    PARTICIPANT_MODULE,
    SESSION_ENDED,
    Role,
)

LINGER = 60
"""Seconds the ended coordinator keeps its final status (``wait_ended`` reads it, ``stop_all`` ends it)."""


@dataclass
class BareSession:
    """``shards``: participant data paths (as the participants' backend sees them); ``storage``: endpoint,
    bucket, prefix; ``s3``: a client with the storage's keys, which sign the session's grants (no workload
    gets a key); ``max_samples``: the rows each shard declares."""

    coordinator_launcher: Launcher
    participant_launcher: Launcher
    storage: dict[str, str]
    s3: Any = field(repr=False)
    shards: list[str]
    run_id: str
    model: dict[str, Any]
    rounds: int = 2
    heartbeat: float = 0.5
    dag_id: str = "nvfl_bare_session"
    image: str | None = None
    participant_args: dict[str, list[str]] = field(default_factory=dict)
    max_samples: int = 1_000_000
    channel: SessionChannel = field(init=False, repr=False)

    def __post_init__(self) -> None:
        spec = self.storage_spec()
        self.channel = SessionChannel.create(
            self.s3, spec, self.run_id, [self.max_samples] * len(self.shards)
        )

    @classmethod
    def on_devstack_s3(cls, s3_state: dict[str, Any], prefix: str, **fields: Any) -> BareSession:
        """A session storing under ``prefix`` of a devstack SeaweedFS (its ``devstack.s3`` state), whose keys
        are the workloads' secret env; ``fields``: the other dataclass fields."""
        from airflow_nevermined_fl.devtools.devstack import s3

        storage = {"endpoint": s3_state["endpoint"], "bucket": s3_state["bucket"], "prefix": prefix}
        return cls(storage=storage, s3=s3.client(s3_state), **fields)

    def labels(self, role: Role, name: str) -> Labels:
        return Labels(self.dag_id, self.run_id, f"start_{role}", role, name)

    def storage_spec(self) -> StorageSpec:
        storage = self.storage
        return StorageSpec(storage["bucket"], storage.get("prefix", ""), storage.get("endpoint"))

    def config(self) -> SessionConfig:
        """The coordinator's session (its ports are the launcher's: :meth:`WorkloadSpec.coordinator`)."""
        return SessionConfig(
            session_id=self.run_id,
            rounds=self.rounds,
            epochs=2,
            min_participants=len(self.shards),
            heartbeat_period=self.heartbeat,
            stall_timeout=60,
            storage=self.storage_spec(),
            model=ModelSpec.of(self.model),
            linger=LINGER,
            channel=self.channel.spec,
        )

    def start_coordinator(self) -> Workload:
        labels = self.labels("coordinator", "coordinator")
        launcher = self.coordinator_launcher
        files, secret_files = self.channel.coordinator_files()
        spec = WorkloadSpec.coordinator(
            launcher,
            labels,
            self.config(),
            COORDINATOR_MODULE,
            files,
            secret_files=secret_files,
            image=self.image,
        )
        return launcher.start(spec)

    def wait_healthy(self, coordinator: Workload, timeout: float = 60.0) -> float:
        """Seconds until the coordinator's status endpoint answers; raises if it exits or times out."""
        start = time.monotonic()
        self._wait(coordinator, lambda _: True, timeout, "coordinator not healthy", 0.05)
        return time.monotonic() - start

    def _wait(
        self,
        coordinator: Workload,
        until: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        poll: float,
    ) -> dict[str, Any]:
        launcher = self.coordinator_launcher

        def gone() -> RuntimeError | None:
            process = launcher.status(coordinator)
            if process.running:
                return None
            return RuntimeError(f"coordinator exited {process.exit_code}: {launcher.logs(coordinator, 5)}")

        url, cert = f"https://{coordinator.endpoints['status']}", self.channel.pair.cert_pem
        return status.wait(url, until, gone, timeout, what, poll, cert=cert)

    def start_participants(self, coordinator: Workload) -> list[Workload]:
        started = []
        for index, shard in enumerate(self.shards):
            name = f"p{index}"
            spec = WorkloadSpec.participant(
                self.labels("participant", name),
                PARTICIPANT_MODULE,
                coordinator.endpoints["grpc"],
                self.channel.pair.cert_pem,
                self.channel.ticket(index),
                data_grant(self.s3, shard, GRANT_SECONDS) if shard.startswith("s3://") else shard,
                options={"heartbeat": self.heartbeat, "seed": index},
                extra_args=self.participant_args.get(name, []),
                image=self.image,
            )
            started.append(self.participant_launcher.start(spec))
        return started

    def wait_ended(self, coordinator: Workload, timeout: float = 180.0) -> dict[str, Any]:
        """The coordinator's final status; raises if it exits first or ``timeout`` passes."""
        return self._wait(
            coordinator, lambda s: s["state"] in SESSION_ENDED, timeout, "session not ended", 0.1
        )

    def stop_all(self) -> list[Workload]:
        """Stop everything this session started on either launcher; returns what was found."""
        stopped = self.coordinator_launcher.stop_run(self.dag_id, self.run_id)
        if self.participant_launcher is not self.coordinator_launcher:
            stopped += self.participant_launcher.stop_run(self.dag_id, self.run_id)
        return stopped

    def run(self, timeout: float = 180.0) -> dict[str, Any]:
        """Start, wait for the end, stop everything; a report with the timings."""
        started = time.monotonic()
        try:
            coordinator = self.start_coordinator()
            launched = time.monotonic() - started
            healthy = self.wait_healthy(coordinator) + launched
            self.start_participants(coordinator)
            final = self.wait_ended(coordinator, timeout)
            wall = time.monotonic() - started
        finally:
            stopped = self.stop_all()
        return {
            "state": final["state"],
            "rounds_completed": final.get("rounds_completed"),
            "rounds_metrics": final["rounds_metrics"],
            "coordinator_start_s": launched,
            "coordinator_healthy_s": healthy,
            "wall_time_s": wall,
            "stopped": sorted(w.labels.name for w in stopped),
        }
