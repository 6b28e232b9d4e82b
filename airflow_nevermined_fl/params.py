"""Session parameters: Airflow Params with a JSON schema (the trigger form) and ``validate_conf``.

The same schema validates a REST ``conf`` at trigger time (Airflow answers 400 naming the field) and,
through :func:`validate_conf`, again at run start before any transaction, adding the checks that span
several fields. ``max_price`` is in token units: a decimal string (``"5"``, ``"0.25"``) or a JSON number,
kept as its plain decimal string.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from airflow.sdk import Param

from airflow_nevermined_fl.contracts.errors import InvalidInputError
from airflow_nevermined_fl.contracts.units import positive_tokens
from airflow_nevermined_fl.runtime.config import STRATEGIES, ConfigError, strategy_spec

_CONN_ID = {"type": "string", "minLength": 1, "maxLength": 250}
DID_PATTERN = "^did:nv:[0-9a-f]{64}$"
TOKENS_PATTERN = "^(?=.*[1-9])[0-9]+(\\.[0-9]+)?$"  # a positive decimal number of tokens

PROVIDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "did": {
            "type": "string",
            "pattern": DID_PATTERN,
            "description": "The provider's compute asset DID (published by its gateway).",
        },
    },
    "required": ["did"],
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


STRATEGY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"enum": list(STRATEGIES), "description": "Server strategy."},
        **{
            key: {"type": "number"} for key in sorted({k for options in STRATEGIES.values() for k in options})
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}


def defaults() -> dict[str, Any]:
    """Default session conf. Providers have no default: a DAG passes its own (e.g. the devstack's)."""
    return {
        "consumer_conn_id": "nevermined_consumer",
        "storage_conn_id": "nvfl_storage_default",
        "coordinator": None,
        "data_providers": [],
        "rounds": 3,
        "epochs": 1,
        "min_participants": 3,
        "fraction": 1.0,
        "model": {"name": "softmax", "num_features": 64, "num_classes": 10},
        "max_price": None,
        "heartbeat": 1.0,
        "stall_timeout": 60,
        "session_timeout": 900,
        "initial_model": None,
        "strategy": {"name": "fedavg"},
    }


PROPERTIES: dict[str, tuple[dict[str, Any], str]] = {
    "consumer_conn_id": (_CONN_ID, "Nevermined connection of the consumer (pays, publishes)."),
    "storage_conn_id": (_CONN_ID, "Storage connection (S3) for DDOs, weights and the final model."),
    "coordinator": (PROVIDER_SCHEMA, "The compute provider running the coordinator, by its asset DID."),
    "data_providers": (
        {"type": "array", "items": PROVIDER_SCHEMA, "minItems": 1, "maxItems": 64},
        "Data providers by asset DID: one participant each, run by the provider's gateway next to its data.",
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
    "max_price": (
        {"type": ["string", "number", "null"], "pattern": TOKENS_PATTERN, "exclusiveMinimum": 0},
        'Highest price accepted from any one provider, in tokens (e.g. "5" or "0.25"); empty for no cap.',
    ),
    "heartbeat": ({"type": "number", "minimum": 0.1, "maximum": 60}, "Participant heartbeat (s)."),
    "stall_timeout": (
        {"type": "number", "minimum": 1, "maximum": 86400},
        "Fail when no round finishes (or the coordinator is unreachable) for this long (s).",
    ),
    "session_timeout": (
        {"type": "number", "minimum": 10, "maximum": 604800},
        "Whole session limit (s); unreleased payments are refunded once it (and a margin) passed on chain.",
    ),
    "initial_model": (
        {"type": ["string", "null"], "pattern": "^did:nv:[0-9a-f]{64}$"},
        "Warm start: a model DID this consumer published; empty for a fresh model.",
    ),
    "strategy": (
        STRATEGY_SCHEMA,
        "How each round's aggregate becomes the next global model: fedavg, fedprox (mu), fedavgm (eta, "
        "momentum), fedadagrad (eta, tau), fedadam/fedyogi (eta, beta1, beta2, tau); defaults: Flower's.",
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
    if full["max_price"] is not None:
        try:
            full["max_price"] = positive_tokens(full["max_price"], "conf.max_price")
        except InvalidInputError as err:
            raise ConfError(str(err)) from None
    try:
        full["strategy"] = strategy_spec(full["strategy"], "conf.strategy").to_dict()
    except ConfigError as err:
        raise ConfError(str(err)) from None
    providers = full["data_providers"]
    dids = [full["coordinator"]["did"]] + [p["did"] for p in providers]
    for i, did in enumerate(dids):
        if dids.index(did) != i:
            raise ConfError(f"conf.data_providers[{i - 1}].did: {did} is listed twice")
    if full["min_participants"] > len(providers):
        raise ConfError(
            f"conf.min_participants: {full['min_participants']} exceeds the {len(providers)} data providers"
        )
    if full["min_participants"] > round(full["fraction"] * len(providers)) and full["fraction"] < 1:
        raise ConfError(
            f"conf.fraction: {full['fraction']} of {len(providers)} providers selects fewer than "
            f"min_participants={full['min_participants']}"
        )
    return full
