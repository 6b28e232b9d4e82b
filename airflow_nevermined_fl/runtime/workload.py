"""What the FL runtime and whoever launches it agree on: the workload roles and their modules and command
lines, the coordinator's session states, a gateway execution's states, and the runtime's exit codes.

Standard library only, like :mod:`.config`: the runtime uses it in the FL venv; the launchers, the gateway
and the bare sessions in Airflow's.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Literal, get_args

Role = Literal["coordinator", "participant"]
ROLES: tuple[Role, ...] = get_args(Role)

COORDINATOR_MODULE = "airflow_nevermined_fl.runtime.coordinator"
PARTICIPANT_MODULE = "airflow_nevermined_fl.runtime.participant"


class _State(StrEnum):
    """A state name: compares, serializes and logs (``repr``) as its plain string."""

    def __repr__(self) -> str:
        return repr(self.value)


class SessionState(_State):
    """The ``state`` of the coordinator's status endpoint."""

    STANDBY = "STANDBY"
    ROUND = "ROUND"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


SESSION_ENDED = (SessionState.FINISHED, SessionState.FAILED)


class ExecutionState(_State):
    """The ``state`` of a gateway's execution of one workload (what the consumer sees)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


UNSUCCESSFUL = (ExecutionState.FAILED, ExecutionState.STOPPED)  # ended without success: never paid

UPLOAD_ACCEPTED = "NVFL_UPLOAD_ACCEPTED"
"""What a participant prints (``NVFL_UPLOAD_ACCEPTED <round>``, a line of its own) once the coordinator
acknowledged its upload of a round: its provider's gateway settles a participant its consumer stops after
that line (its data's work is in)."""


class ExitCode(IntEnum):
    """Exit codes of the coordinator and the participant."""

    FINISHED = 0
    FAILED = 1  # session failed (coordinator: stall or storage; participant: dropped by the coordinator)
    BAD_INPUT = 2  # config, data or storage refused before anything was written
    UNREACHABLE = 3  # participant: no answer from the coordinator for --connect-timeout seconds
    TERMINATED = 143  # coordinator: SIGTERM/SIGINT before the session ended


def ended_state(exit_code: int | None) -> ExecutionState:
    """The execution state of a workload that exited with ``exit_code``."""
    return ExecutionState.FINISHED if exit_code == ExitCode.FINISHED else ExecutionState.FAILED


def coordinator_args(config: str, status_file: str | None = None) -> list[str]:
    """The coordinator's arguments: its session config file and where it writes its bound ports."""
    return ["--config", config, *(["--status-file", status_file] if status_file else [])]


def participant_args(
    coordinator: str,
    cert: str,
    seat: str,
    *,
    data: str | None = None,
    data_url_file: str | None = None,
    model: str | None = None,
    heartbeat: float | None = None,
    num_classes: int | None = None,
    seed: int | None = None,
    proximal_mu: float | None = None,
) -> list[str]:
    """The participant's arguments (``None``: the participant's default); see ``participant --help``.
    ``cert``, ``seat`` and ``data_url_file`` are files (the last two secret); ``data`` a local path."""
    args = ["--coordinator", coordinator, "--coordinator-cert", cert, "--seat-file", seat]
    options = {
        "--data": data,
        "--data-url-file": data_url_file,
        "--model": model,
        "--heartbeat": heartbeat,
        "--num-classes": num_classes,
        "--seed": seed,
        "--proximal-mu": proximal_mu,
    }
    for flag, value in options.items():
        if value is not None:
            args += [flag, str(value)]
    return args
