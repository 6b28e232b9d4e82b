"""One bare FL session (no Airflow, no chain) run through launchers: the backends' tests and bench.

The coordinator and the participants may use different launchers (a mixed session). Everything the
session started is stopped at the end, whatever happened.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from airflow_nevermined_fl.launchers.base import Labels, Launcher, Workload, WorkloadSpec

COORDINATOR = "airflow_nevermined_fl.runtime.coordinator"
PARTICIPANT = "airflow_nevermined_fl.runtime.participant"
ENDED = ("FINISHED", "FAILED")


def get_status(status_url: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"{status_url}/status", timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


@dataclass
class BareSession:
    """``shards``: participant data paths (as the participants' backend sees them); ``storage``: endpoint,
    bucket, prefix; ``secret_env``: S3 keys (reach the workloads only)."""

    coordinator_launcher: Launcher
    participant_launcher: Launcher
    storage: dict[str, str]
    secret_env: dict[str, str] = field(repr=False)
    shards: list[str]
    run_id: str
    model: dict[str, Any]
    rounds: int = 2
    heartbeat: float = 0.5
    dag_id: str = "nvfl_bare_session"
    image: str | None = None
    participant_args: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def on_devstack_s3(cls, s3_state: dict[str, Any], prefix: str, **fields: Any) -> BareSession:
        """A session storing under ``prefix`` of a devstack SeaweedFS (its ``devstack.s3`` state), whose keys
        are the workloads' secret env; ``fields``: the other dataclass fields."""
        from airflow_nevermined_fl.devstack import s3

        storage = {"endpoint": s3_state["endpoint"], "bucket": s3_state["bucket"], "prefix": prefix}
        return cls(storage=storage, secret_env=s3.env(s3_state), **fields)

    def labels(self, role: str, name: str) -> Labels:
        return Labels(self.dag_id, self.run_id, f"start_{role}", role, name)  # type: ignore[arg-type]

    def config(self, grpc_port: int, status_port: int) -> dict[str, Any]:
        bind = self.coordinator_launcher.bind_host
        return {
            "session_id": self.run_id,
            "rounds": self.rounds,
            "epochs": 2,
            "min_participants": len(self.shards),
            "fraction": 1.0,
            "heartbeat_period": self.heartbeat,
            "heartbeat_timeout": max(3.0, 5 * self.heartbeat),
            "stall_timeout": 60,
            "grpc_host": bind,
            "grpc_port": grpc_port,
            "status_host": bind,
            "status_port": status_port,
            "storage": self.storage,
            "model": self.model,
            "linger": 60,
        }

    def start_coordinator(self) -> Workload:
        run = self.coordinator_launcher
        grpc_port, status_port = run.free_port(), run.free_port()
        return run.start(
            WorkloadSpec(
                labels=self.labels("coordinator", "coordinator"),
                module=COORDINATOR,
                args=["--config", "{workdir}/session.json", "--status-file", "{workdir}/status-port"],
                ports={"grpc": grpc_port, "status": status_port},
                files={"session.json": json.dumps(self.config(grpc_port, status_port))},
                secret_env=self.secret_env,
                image=self.image,
            )
        )

    def wait_healthy(self, coordinator: Workload, timeout: float = 60.0) -> float:
        """Seconds until the coordinator's status endpoint answers; raises if it exits or times out."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                get_status(f"http://{coordinator.endpoints['status']}")
                return time.monotonic() - start
            except OSError:
                if not self.coordinator_launcher.status(coordinator).running:
                    raise RuntimeError(self._died(coordinator)) from None
            time.sleep(0.05)
        raise TimeoutError(f"coordinator not healthy within {timeout:.0f}s")

    def _died(self, coordinator: Workload) -> str:
        status = self.coordinator_launcher.status(coordinator)
        return f"coordinator exited {status.exit_code}: {self.coordinator_launcher.logs(coordinator, 5)}"

    def start_participants(self, coordinator: Workload) -> list[Workload]:
        storage = f"s3://{self.storage['bucket']}/{self.storage['prefix']}"
        started = []
        for index, shard in enumerate(self.shards):
            name = f"p{index}"
            args = ["--coordinator", coordinator.endpoints["grpc"], "--data", shard, "--storage", storage]
            args += ["--heartbeat", str(self.heartbeat), "--seed", str(index)]
            spec = WorkloadSpec(
                labels=self.labels("participant", name),
                module=PARTICIPANT,
                args=args + self.participant_args.get(name, []),
                secret_env=self.secret_env,
                image=self.image,
            )
            started.append(self.participant_launcher.start(spec))
        return started

    def wait_ended(self, coordinator: Workload, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = get_status(f"http://{coordinator.endpoints['status']}")
            except OSError:
                if not self.coordinator_launcher.status(coordinator).running:
                    raise RuntimeError(self._died(coordinator)) from None
            else:
                if status["state"] in ENDED:
                    return status
            time.sleep(0.1)
        raise TimeoutError(f"session not ended within {timeout:.0f}s")

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
            status = self.wait_ended(coordinator, timeout)
            wall = time.monotonic() - started
        finally:
            stopped = self.stop_all()
        return {
            "state": status["state"],
            "rounds_completed": status.get("rounds_completed"),
            "rounds_metrics": status["rounds_metrics"],
            "coordinator_start_s": launched,
            "coordinator_healthy_s": healthy,
            "wall_time_s": wall,
            "stopped": sorted(w.labels.name for w in stopped),
        }
