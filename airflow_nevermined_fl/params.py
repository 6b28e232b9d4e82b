"""Session parameters: Airflow Params with a JSON schema (the trigger form) and ``validate_conf``.

The same schema validates a REST ``conf`` at trigger time (Airflow answers 400 naming the field) and,
through :func:`validate_conf`, again at run start before any transaction, adding the checks that span
several fields.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from airflow.sdk import Param

from airflow_nevermined_fl.paths import state_dir

BACKENDS = ("local", "docker", "kubernetes")

_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}
_CONN_ID = {"type": "string", "minLength": 1, "maxLength": 250}
_ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}

_PROVIDER_PROPS: dict[str, Any] = {
    "name": {**_NAME, "description": "Short unique name (lowercase letters, digits, dashes)."},
    "conn_id": {**_CONN_ID, "description": "Nevermined connection of this provider's account."},
    "account": {**_ADDRESS, "description": "Provider address; checked against the connection's account."},
    "price": {"type": "integer", "minimum": 1, "description": "Price in token units, locked in escrow."},
    "backend": {"type": "string", "enum": list(BACKENDS), "description": "Where the workload runs."},
    "backend_conn_id": {
        "type": ["string", "null"],
        "description": "Connection of the backend (Docker host, Kubernetes cluster); none for local.",
    },
}

COORDINATOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": _PROVIDER_PROPS,
    "required": ["name", "conn_id", "price", "backend"],
    "additionalProperties": False,
}

DATA_PROVIDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_PROVIDER_PROPS,
        "dataset": {
            "type": "string",
            "pattern": "^(s3://[^/]+/.+|/.+)$",
            "description": "Where the provider's data is: s3://bucket/key.npz or an absolute local path.",
        },
    },
    "required": ["name", "conn_id", "dataset", "price", "backend"],
    "additionalProperties": False,
}

MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "pattern": "^(softmax|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$",
            "description": "'softmax' (built in) or module:Class of an xain-sdk Participant.",
        },
        "num_features": {"type": "integer", "minimum": 1, "description": "Inputs (softmax)."},
        "num_classes": {"type": "integer", "minimum": 2, "description": "Classes (softmax)."},
    },
    "required": ["name"],
    "if": {"properties": {"name": {"const": "softmax"}}},
    "then": {"required": ["name", "num_features", "num_classes"]},
    "additionalProperties": False,
}


def demo_dataset(index: int) -> str:
    """Where ``nvfl demo`` puts data provider ``index``'s shard (the default conf's datasets)."""
    return str(state_dir() / "data" / "digits-noniid" / f"provider-{index - 1}.npz")


def defaults() -> dict[str, Any]:
    """Default session conf: the embedded demo (one coordinator provider, three data providers)."""
    return {
        "consumer_conn_id": "nevermined_consumer",
        "storage_conn_id": "nvfl_storage_default",
        "coordinator": {
            "name": "coordinator",
            "conn_id": "nevermined_coordinator_provider",
            "price": 10,
            "backend": "local",
        },
        "data_providers": [
            {
                "name": f"provider-{i}",
                "conn_id": f"nevermined_provider_{i}",
                "dataset": demo_dataset(i),
                "price": 5,
                "backend": "local",
            }
            for i in (1, 2, 3)
        ],
        "rounds": 3,
        "epochs": 1,
        "min_participants": 3,
        "fraction": 1.0,
        "model": {"name": "softmax", "num_features": 64, "num_classes": 10},
        "heartbeat": 1.0,
        "stall_timeout": 60,
        "session_timeout": 900,
        "refund_after_blocks": 1000,
        "initial_model": None,
    }


PROPERTIES: dict[str, tuple[dict[str, Any], str]] = {
    "consumer_conn_id": (_CONN_ID, "Nevermined connection of the consumer (pays, publishes)."),
    "storage_conn_id": (_CONN_ID, "Storage connection (S3) for DDOs, weights and the final model."),
    "coordinator": (COORDINATOR_SCHEMA, "The compute provider running the coordinator."),
    "data_providers": (
        {"type": "array", "items": DATA_PROVIDER_SCHEMA, "minItems": 1, "maxItems": 64},
        "Data providers: one participant each, trained next to the provider's data.",
    ),
    "rounds": ({"type": "integer", "minimum": 1, "maximum": 1000}, "Number of FL rounds."),
    "epochs": ({"type": "integer", "minimum": 1, "maximum": 1000}, "Local epochs per round."),
    "min_participants": (
        {"type": "integer", "minimum": 1},
        "Participants needed before a round starts (the DDO's minParticipants).",
    ),
    "fraction": (
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "Fraction of participants selected per round (the DDO's participantsRatio).",
    ),
    "model": (MODEL_SCHEMA, "Model trained by every participant."),
    "heartbeat": ({"type": "number", "minimum": 0.1, "maximum": 60}, "Participant heartbeat (s)."),
    "stall_timeout": (
        {"type": "number", "minimum": 1, "maximum": 86400},
        "Fail when no round finishes (or the coordinator is unreachable) for this long (s).",
    ),
    "session_timeout": ({"type": "number", "minimum": 10, "maximum": 604800}, "Whole session limit (s)."),
    "refund_after_blocks": (
        {"type": "integer", "minimum": 1},
        "Blocks after which the payments of an unfinished session can be refunded to the consumer.",
    ),
    "initial_model": (
        {"type": ["string", "null"], "pattern": "^(s3://[^/]+/.+\\.npz|did:nv:[0-9a-f]{64})$"},
        "Warm start: s3 URL of an .npz or a published model DID; empty for a fresh model.",
    ),
}

SESSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {key: schema for key, (schema, _) in PROPERTIES.items()},
    "required": list(PROPERTIES),
    "additionalProperties": False,
}


class ConfError(ValueError):
    """Invalid session conf; the message names the field and what was expected."""


def session_params(**overrides: Any) -> dict[str, Param]:
    """The DAG's Params (defaults overridable per DAG), rendered by the UI trigger form."""
    unknown = set(overrides) - set(PROPERTIES)
    if unknown:
        raise ConfError(f"unknown session parameter(s): {sorted(unknown)}")
    values = {**defaults(), **overrides}
    return {
        key: Param(values[key], description=description, schema=schema)
        for key, (schema, description) in PROPERTIES.items()
    }


def _field(path: Any) -> str:
    out = "conf"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """Return the full session conf (defaults filled) or raise :class:`ConfError` naming the field."""
    if not isinstance(conf, dict):
        raise ConfError(f"conf: expected an object, got {type(conf).__name__}")
    full = {**defaults(), **conf}
    errors = sorted(jsonschema.Draft7Validator(SESSION_SCHEMA).iter_errors(full), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        raise ConfError(f"{_field(err.absolute_path)}: {err.message}")
    providers = full["data_providers"]
    names = [p["name"] for p in providers] + [full["coordinator"]["name"]]
    for i, name in enumerate(names):
        if names.index(name) != i:
            where = "conf.coordinator.name" if i == len(providers) else f"conf.data_providers[{i}].name"
            raise ConfError(f"{where}: name {name!r} is used twice; names must be unique")
    if full["min_participants"] > len(providers):
        raise ConfError(
            f"conf.min_participants: {full['min_participants']} exceeds the {len(providers)} data providers"
        )
    if full["min_participants"] > round(full["fraction"] * len(providers)) and full["fraction"] < 1:
        raise ConfError(
            f"conf.fraction: {full['fraction']} of {len(providers)} providers selects fewer than "
            f"min_participants={full['min_participants']}"
        )
    from airflow_nevermined_fl.launchers import BACKENDS

    entries = [("conf.coordinator", full["coordinator"])]
    entries += [(f"conf.data_providers[{i}]", p) for i, p in enumerate(providers)]
    for where, entry in entries:
        if entry["backend"] not in BACKENDS:
            available = sorted(BACKENDS)
            raise ConfError(f"{where}.backend: {entry['backend']!r} is not available; use one of {available}")
        if entry["backend"] != "local" and not entry.get("backend_conn_id"):
            raise ConfError(f"{where}.backend_conn_id: required for backend {entry['backend']!r}")
    return full
