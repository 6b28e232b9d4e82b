"""A provider's policy for one compute service: what its gateway runs next to its data.

Set per service in the gateway's config, published in the asset DDO (``main.policy``) and in ``info``,
enforced by the gateway before it launches anything, and checked by the consumer's ``validate`` from the
DDOs before its first transaction. Both sides use these models and :func:`check_session`: each refusal is a
:class:`PolicyError` naming the rule (``policy.<field>``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_nevermined_fl import __version__, ddo

DEFAULT_IMAGE = f"{ddo.RUNTIME_IMAGE}:{__version__}"
DIGEST = r"sha256:[0-9a-f]{64}"
MODEL_CLASS = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
SOFTMAX = "softmax"
Visibility = Literal["none", "events", "full"]


class PolicyError(ValueError):
    """A session outside the policy; the message names the rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bounds(_Strict):
    """The largest session the service takes; ``model_size`` in weights (softmax: (features + 1) x
    classes); ``heartbeat_*`` in seconds."""

    rounds: int = Field(1000, ge=1)
    epochs: int = Field(100, ge=1)
    model_size: int = Field(10_000_000, ge=1)
    session_timeout: float = Field(86_400, gt=0)
    heartbeat_min: float = Field(0.1, gt=0)
    heartbeat_max: float = Field(60, gt=0)


class Resources(_Strict):
    """What one workload may use: CPUs, memory (MiB), processes, and its wall time (seconds; it must
    cover the longest session and the coordinator's linger)."""

    cpus: float = Field(2.0, gt=0)
    memory_mb: int = Field(2048, ge=64)
    pids: int = Field(512, ge=16)
    wall_time: float = Field(90_000, gt=0)


class Logs(_Strict):
    """What the consumer sees of a workload's output (always redacted, at most ``max_lines`` lines):
    ``full`` every line, ``events`` the runtime's event lines with plain values only, ``none`` nothing."""

    coordinator: Visibility = "full"
    participant: Visibility = "events"
    max_lines: int = Field(1000, ge=1, le=100_000)


class Policy(_Strict):
    """``images``: the container images allowed, ``name:tag`` (as a workflow DDO names it) -> the pinned
    reference run instead (docker: ``sha256:<image id>`` or ``repo@sha256:...``; kubernetes:
    ``repo@sha256:...``; None: the tag as present on the provider's own engine); unused by the local
    backend, which runs the runtime modules only. ``models``: ``softmax`` and ``module:Class`` entries.
    ``coordinators`` (a participant service's): the addresses of the coordinator providers whose sessions it
    joins (None: the owner of any published ``fl-coordinator`` asset)."""

    images: dict[str, str | None] = Field(default_factory=lambda: {DEFAULT_IMAGE: None})
    models: tuple[str, ...] = (SOFTMAX,)
    coordinators: tuple[str, ...] | None = None
    bounds: Bounds = Bounds()
    resources: Resources = Resources()
    logs: Logs = Logs()

    @field_validator("images")
    @classmethod
    def _pinned(cls, images: dict[str, str | None]) -> dict[str, str | None]:
        for name, pin in images.items():
            if pin is not None and not re.fullmatch(rf"({DIGEST}|[^\s@]+@{DIGEST})", pin):
                raise ValueError(f"{name}: expected sha256:<64 hex> or repo@sha256:<64 hex>, got {pin!r}")
        return images

    @field_validator("models")
    @classmethod
    def _models(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        for name in models:
            if name != SOFTMAX and not MODEL_CLASS.fullmatch(name):
                raise ValueError(f"{name!r}: expected 'softmax' or 'module:Class'")
        return models

    @field_validator("coordinators")
    @classmethod
    def _addresses(cls, coordinators: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if coordinators is None:
            return None
        for address in coordinators:
            if not ADDRESS.fullmatch(address):
                raise ValueError(f"{address!r}: expected an address 0x<40 hex>")
        return tuple(a.lower() for a in coordinators)

    @model_validator(mode="after")
    def _wall_time(self) -> Policy:
        if self.resources.wall_time <= self.bounds.session_timeout:
            raise ValueError("resources.wall_time: must exceed bounds.session_timeout")
        if self.bounds.heartbeat_min > self.bounds.heartbeat_max:
            raise ValueError("bounds.heartbeat_min: above bounds.heartbeat_max")
        return self

    @classmethod
    def parse(cls, data: Any, where: str) -> Policy:
        """The policy of ``data`` (None: the defaults); ValueError naming the first bad field."""
        try:
            return cls() if data is None else cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            field = "".join(f".{p}" for p in first["loc"])
            raise ValueError(f"{where}{field}: {first['msg'].removeprefix('Value error, ')}") from None

    def public(self) -> dict[str, Any]:
        """The policy as published (JSON)."""
        return self.model_dump(mode="json")


def _at_most(value: Any, bound: float, rule: str) -> None:
    if float(value) > bound:
        raise PolicyError(f"policy.{rule}: {value} is above the provider's bound {bound:g}")


def check_model(policy: Policy, model: Any) -> str:
    """The name of ``model`` (``{"name": ...}``) if the policy allows it, else :class:`PolicyError`."""
    name = model.get("name") if isinstance(model, dict) else None
    if name not in policy.models:
        raise PolicyError(f"policy.models: {name!r} is not an allowed model (allowed: {list(policy.models)})")
    return str(name)


def check_session(
    policy: Policy,
    *,
    model: dict[str, Any],
    rounds: Any,
    epochs: Any,
    heartbeat: Any,
    session_timeout: Any,
) -> None:
    """Refuse a session outside ``policy`` (:class:`PolicyError` naming the rule); TypeError/ValueError
    for a value that is not a number."""
    name = check_model(policy, model)
    bounds = policy.bounds
    _at_most(rounds, bounds.rounds, "bounds.rounds")
    _at_most(epochs, bounds.epochs, "bounds.epochs")
    _at_most(session_timeout, bounds.session_timeout, "bounds.session_timeout")
    _at_most(heartbeat, bounds.heartbeat_max, "bounds.heartbeat_max")
    if float(heartbeat) < bounds.heartbeat_min:
        raise PolicyError(
            f"policy.bounds.heartbeat_min: {heartbeat} is below the provider's bound {bounds.heartbeat_min:g}"
        )
    if name == SOFTMAX:
        size = (int(model.get("num_features", 0)) + 1) * int(model.get("num_classes", 0))
        _at_most(size, bounds.model_size, "bounds.model_size")


def check_coordinator(policy: Policy, address: str) -> None:
    """Refuse (:class:`PolicyError`) a session whose coordinator provider the policy does not list."""
    if policy.coordinators is not None and address.lower() not in policy.coordinators:
        raise PolicyError(
            f"policy.coordinators: {address} is not a coordinator provider this service works with"
        )


def check_image(policy: Policy, image: str) -> str:
    """The reference to run for the DDO's ``image`` (``name:tag``): its pin, else the name itself;
    :class:`PolicyError` when the policy does not list it."""
    if image not in policy.images:
        allowed = list(policy.images)
        raise PolicyError(f"policy.images: {image!r} is not an allowed image (allowed: {allowed})")
    return policy.images[image] or image
