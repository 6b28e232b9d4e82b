"""``nvfl session local``: one bare FL session (coordinator + N participants as local processes).

No Airflow, no chain: for users testing participant code, and the baseline of the orchestration-overhead
benchmark. Runtime processes run with the FL venv's python (:func:`runtime_env.runtime_python`) on the
secure session channel (:mod:`.session_channel`): TLS, seat credentials, storage grants; no process gets a
storage key (only a ``stock_sdk`` coordinator, through its environment). The helpers here (start a
coordinator, a participant, read its status) are also what the runtime tests and ``bench/`` use.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_nevermined_fl import objectstore, process
from airflow_nevermined_fl.devtools import data as datasets
from airflow_nevermined_fl.devtools.session_channel import SessionChannel, write_files
from airflow_nevermined_fl.gateway.launchers.base import PEER_CERT_FILE, SEAT_FILE
from airflow_nevermined_fl.paths import state_dir
from airflow_nevermined_fl.runtime import status as coordinator_status
from airflow_nevermined_fl.runtime.config import ModelSpec, SessionConfig, StorageSpec, strategy_spec
from airflow_nevermined_fl.runtime.workload import (
    COORDINATOR_MODULE,
    PARTICIPANT_MODULE,
    SESSION_ENDED,
    SessionState,
    coordinator_args,
    participant_args,
)
from airflow_nevermined_fl.runtime_env import runtime_python

# Variables a runtime process inherits from ours; everything else (Airflow's settings, PYTHONPATH) stays out.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "NVFL_LOG_LEVEL")


class SessionLocalError(RuntimeError):
    """The session could not start (bad input reported by the runtime, S3 unavailable)."""


def runtime_env(secret_env: dict[str, str]) -> dict[str, str]:
    """Environment of a runtime process: a few inherited variables plus ``secret_env`` (S3 keys)."""
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    return {**env, "PYTHONUNBUFFERED": "1", **secret_env}


@dataclass
class RuntimeProcess:
    """A runtime service we started (own process group), its log and its exit code once ended."""

    name: str
    log: Path
    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls, name: str, args: list[str], log: Path, env: dict[str, str]) -> RuntimeProcess:
        """``<FL venv python> *args`` (e.g. ``["-m", module, ...]``), output appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as handle:
            popen = subprocess.Popen(
                [str(runtime_python()), *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        return cls(name, log, popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        """SIGTERM then SIGKILL the process group; reaps the child."""
        if self.popen.poll() is None:
            process.stop(self.pid)
        self.popen.wait(10)

    def tail(self, lines: int = 20) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )


@dataclass
class Coordinator:
    """``cert``: the session certificate its ``https`` status endpoint must present (None: ``stock_sdk``)."""

    process: RuntimeProcess
    grpc: str
    status_url: str
    cert: str | None = None

    def status(self) -> dict[str, Any]:
        return coordinator_status.fetch(self.status_url, cert=self.cert)


def start_coordinator(
    config: SessionConfig | dict[str, Any],
    workdir: Path,
    secret_env: dict[str, str] | None = None,
    timeout: float = 60.0,
    channel: SessionChannel | None = None,
) -> Coordinator:
    """Write ``coordinator.json`` (``config``, or a raw dict: the runtime's tests give bad ones) and the
    ``channel``'s files next to it, start the coordinator and wait for its ready file (bound ports);
    ``secret_env``: a ``stock_sdk`` coordinator's S3 keys."""
    workdir.mkdir(parents=True, exist_ok=True)
    if channel is not None:
        channel.write_coordinator_files(workdir)
    config_file, ready_file = workdir / "coordinator.json", workdir / "coordinator.ready"
    config_file.write_text(
        config.to_json() if isinstance(config, SessionConfig) else json.dumps(config, indent=2)
    )
    ready_file.unlink(missing_ok=True)
    proc = RuntimeProcess.start(
        "coordinator",
        ["-m", COORDINATOR_MODULE, *coordinator_args(str(config_file), str(ready_file))],
        workdir / "coordinator.log",
        runtime_env(secret_env or {}),
    )
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if proc.exit_code() is not None:
            raise SessionLocalError(f"coordinator exited {proc.exit_code()}: {proc.tail(5)}")
        if time.monotonic() > deadline:
            proc.stop()
            raise SessionLocalError(f"coordinator not ready within {timeout:.0f}s: {proc.tail(5)}")
        time.sleep(0.05)
    ready = json.loads(ready_file.read_text())
    cert = channel.pair.cert_pem if channel is not None else None
    return Coordinator(proc, ready["grpc"], ready["status_url"], cert)


def start_participant(
    name: str,
    coordinator: str,
    data: str,
    cert_pem: str,
    ticket: str,
    workdir: Path,
    heartbeat: float = 0.5,
    model: str = "softmax",
    extra_args: tuple[str, ...] = (),
) -> RuntimeProcess:
    """A participant on ``data`` (a local path) joining ``coordinator`` with the seat ``ticket``; its
    files (the certificate, the ticket: 0600) in ``workdir/<name>/``."""
    files = workdir / name
    write_files(files, {PEER_CERT_FILE: cert_pem}, {SEAT_FILE: ticket})
    args = participant_args(
        coordinator,
        str(files / PEER_CERT_FILE),
        str(files / SEAT_FILE),
        data=data,
        model=model,
        heartbeat=heartbeat,
    )
    return RuntimeProcess.start(
        name, ["-m", PARTICIPANT_MODULE, *args, *extra_args], workdir / f"{name}.log", runtime_env({})
    )


def wait_ended(coordinator: Coordinator, timeout: float, poll: float = 0.1) -> dict[str, Any]:
    """Poll the status until FINISHED/FAILED; raises TimeoutError, or SessionLocalError if it died first."""

    def gone() -> SessionLocalError | None:
        code = coordinator.process.exit_code()
        if code is None:
            return None
        return SessionLocalError(f"coordinator exited {code}: {coordinator.process.tail(5)}")

    return coordinator_status.wait(
        coordinator.status_url,
        lambda s: s["state"] in SESSION_ENDED,
        gone,
        timeout,
        "session not ended",
        poll,
        5.0,
        coordinator.cert,
    )


def _s3_settings(endpoint: str | None, bucket: str | None) -> tuple[str, str, dict[str, str]]:
    """S3 endpoint, bucket and keys (they sign the grants and read the model back): explicit (keys from
    our environment) or the devstack's."""
    if endpoint or bucket:
        keys = {k: os.environ.get(k, "") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        if not endpoint or not bucket or not all(keys.values()):
            raise SessionLocalError(
                "--s3-endpoint and --bucket go together, with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set"
            )
        return endpoint, bucket, {**keys, "AWS_ENDPOINT_URL": endpoint}
    from airflow_nevermined_fl.devtools import devstack
    from airflow_nevermined_fl.devtools.devstack import s3

    state = devstack.load_state().get("s3")
    if not state or not s3.alive(state):
        raise SessionLocalError("S3: run `nvfl devstack up` first, or pass --s3-endpoint and --bucket")
    return state["endpoint"], state["bucket"], s3.env(state)


def _evaluate(model: dict[str, str], test_file: Path, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [str(runtime_python()), "-m", "airflow_nevermined_fl.runtime.evaluate"]
        + ["--model", model["url"], "--sha256", model["sha256"], "--data", str(test_file)],
        capture_output=True,
        text=True,
        env=runtime_env(env),
        check=False,
    )
    if result.returncode != 0:
        raise SessionLocalError(f"evaluation failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


@dataclass
class LocalSession:
    """Parameters of ``nvfl session local``."""

    participants: int
    rounds: int
    epochs: int = 3
    scheme: str = "non-iid"
    alpha: float = 0.5
    seed: int = 0
    heartbeat: float = 0.5
    min_participants: int | None = None
    fraction: float = 1.0
    model: str = "softmax"
    stall_timeout: float = 60.0
    timeout: float = 600.0
    s3_endpoint: str | None = None
    bucket: str | None = None
    participant_args: tuple[str, ...] = field(default_factory=tuple)
    strategy: dict[str, Any] | None = None

    def run(self) -> dict[str, Any]:
        """Run the session to its end; returns the JSON report. Every started process is stopped."""
        if self.participants < 1:
            raise SessionLocalError(f"--participants: expected an integer >= 1, got {self.participants}")
        try:
            strategy = strategy_spec(self.strategy, "--strategy")
        except ValueError as exc:
            raise SessionLocalError(str(exc)) from None
        mu = ("--proximal-mu", str(strategy.options["mu"])) if strategy.name == "fedprox" else ()
        endpoint, bucket, env = _s3_settings(self.s3_endpoint, self.bucket)
        session_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        workdir = state_dir() / "sessions" / session_id
        try:
            manifest = datasets.partition(
                workdir / "data", self.participants, self.scheme, self.alpha, 0.2, self.seed
            )
        except datasets.DataError as exc:
            raise SessionLocalError(str(exc)) from None
        storage = StorageSpec(bucket, f"sessions/{session_id}", endpoint)
        rows = [shard["rows"] for shard in manifest["providers"]]
        s3 = objectstore.client(endpoint, "us-east-1", env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
        channel = SessionChannel.create(s3, storage, session_id, rows)
        builtin = self.model == "softmax"
        config = SessionConfig(
            session_id=session_id,
            rounds=self.rounds,
            epochs=self.epochs,
            min_participants=self.min_participants or self.participants,
            fraction=self.fraction,
            heartbeat_period=self.heartbeat,
            stall_timeout=self.stall_timeout,
            linger=2 * self.heartbeat + 1,  # the processes are waited for below
            storage=storage,
            model=ModelSpec.of(datasets.softmax_model(manifest)) if builtin else ModelSpec(),
            channel=channel.spec,
            strategy=strategy,
        )
        started = time.monotonic()
        procs: list[RuntimeProcess] = []
        try:
            coordinator = start_coordinator(config, workdir, channel=channel)
            procs.append(coordinator.process)
            for index, shard in enumerate(manifest["providers"]):
                procs.append(
                    start_participant(
                        f"participant-{index}",
                        coordinator.grpc,
                        shard["path"],
                        channel.pair.cert_pem,
                        channel.ticket(index),
                        workdir,
                        self.heartbeat,
                        self.model,
                        (*self.participant_args, *mu, "--seed", str(self.seed + index)),
                    )
                )
            status = wait_ended(coordinator, self.timeout)
            wall_time = time.monotonic() - started
            for proc in procs:
                proc.wait(timeout=max(30.0, 4 * self.heartbeat + 10))
        finally:
            for proc in procs:
                proc.stop()
        evaluation = (
            _evaluate(status["model"], Path(manifest["test"]["path"]), env)
            if builtin and status["state"] == SessionState.FINISHED
            else {}
        )
        return {
            "session_id": session_id,
            "state": status["state"],
            "reason": status["reason"],
            "rounds": self.rounds,
            "rounds_completed": status["rounds_completed"],
            "rounds_metrics": status["rounds_metrics"],
            "strategy": strategy.to_dict(),
            "refused_uploads": status["refused_uploads"],
            "final_accuracy": evaluation.get("accuracy"),
            "final_loss": evaluation.get("loss"),
            "test_rows": evaluation.get("n"),
            "model": status["model"],
            "wall_time_s": wall_time,
            "exit_codes": {proc.name: proc.exit_code() for proc in procs},
            "workdir": str(workdir),
        }
