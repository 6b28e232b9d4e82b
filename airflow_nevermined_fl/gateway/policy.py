"""The gateway's side of a service's policy (:mod:`..protocol.policy`): a workflow checked against it
before anything is launched, the image and the resource limits a launch gets from it, and what the
consumer may see of a workload's output."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.gateway.config import GatewayConfig
from airflow_nevermined_fl.gateway.launchers.base import Limits
from airflow_nevermined_fl.protocol.policy import Policy, PolicyError, check_image, check_model, check_session

if TYPE_CHECKING:
    from airflow_nevermined_fl.gateway.records import Execution

__all__ = ["PolicyError", "check_workflow", "image", "limits", "visible"]

CONTAINER_BACKENDS = ("docker", "kubernetes")
MAX_LINE = 2000
"""The longest line the consumer gets of a workload's output (longer ones are cut)."""
_VALUE = r"(-?[0-9][0-9.e+-]*|'[\w .:/-]{0,80}'|<[\w.]+: -?\d+>|True|False|None)"
EVENT_LINE = re.compile(
    rf"[0-9-]+ [0-9:,]+ [A-Z]+ (__main__|xain_sdk[\w.]*|xain_fl[\w.]*|airflow_nevermined_fl[\w.]*): "
    rf"event='[\w .:-]{{1,80}}'( \w{{1,40}}={_VALUE}){{0,12}}"
)
"""A runtime event line: ``<time> <LEVEL> <runtime logger>: event='...' key=value ...`` with plain values
only (numbers, short words): a data row, an array or free text is not one."""


def check_workflow(
    policy: Policy,
    backend: str,
    container: dict[str, Any],
    model: dict[str, Any],
    parameters: dict[str, Any] | None = None,
) -> None:
    """Refuse (:class:`PolicyError`) a workflow whose model or, on a container backend, image the policy
    does not allow, or whose session (``parameters``, when known) is outside its bounds or runs another
    model."""
    check_model(policy, model)
    if backend in CONTAINER_BACKENDS:
        check_image(policy, f"{container['image']}:{container['tag']}")
    if parameters is not None:
        if model != parameters["model"]:
            raise PolicyError(f"policy.models: the workflow's model {model!r} is not its session's")
        check_session(
            policy,
            model=model,
            rounds=parameters["rounds"],
            epochs=parameters["epochs"],
            heartbeat=parameters["heartbeat"],
            session_timeout=parameters["sessionTimeout"],
        )


def image(policy: Policy, container: dict[str, Any], backend: str) -> str | None:
    """What a container backend runs for a checked DDO container: its pinned reference (None: the local
    backend, which runs the runtime modules only)."""
    if backend not in CONTAINER_BACKENDS:
        return None
    return check_image(policy, f"{container['image']}:{container['tag']}")


def limits(policy: Policy) -> Limits:
    resources = policy.resources
    return Limits(resources.cpus, resources.memory_mb, resources.pids, resources.wall_time)


def visible(config: GatewayConfig, execution: Execution, text: str, tail: int | None = None) -> str:
    """What the consumer sees of an execution's (redacted) output ``text``: by its service's policy
    (the defaults for a service no longer configured) for its role, each line cut at :data:`MAX_LINE`, the
    last ``tail`` lines (at most the policy's ``logs.max_lines``)."""
    service = next((s for s in config.services if s.name == execution.service), None)
    logs = (service.policy if service else Policy()).logs
    level = logs.coordinator if execution.role == "coordinator" else logs.participant
    if level == "none":
        return ""
    lines = text.splitlines(keepends=True)
    if level == "events":
        lines = [line for line in lines if EVENT_LINE.fullmatch(line.rstrip("\n"))]
    lines = [line if len(line) <= MAX_LINE else line[:MAX_LINE] + "[cut]\n" for line in lines]
    if tail is not None:
        lines = lines[-min(tail, logs.max_lines) :]
    return "".join(lines)
