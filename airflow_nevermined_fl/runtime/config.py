"""The coordinator's session config (JSON or TOML), validated field by field before anything starts.

The config is rendered from a public DDO, so it never holds credentials: S3 keys come from the environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN_MODELS = ("softmax",)
CUSTOM_MODEL = "custom"


class ConfigError(ValueError):
    """A config field is missing or invalid; the message names the field and what was expected."""

    def __init__(self, name: str, expected: str, got: Any = None) -> None:
        got_text = "" if got is None else f", got {got!r}"
        super().__init__(f"{name}: expected {expected}{got_text}")
        self.field = name


@dataclass(frozen=True)
class StorageSpec:
    """Where weights and the final model go. ``prefix`` is "" or ends with "/"."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"


@dataclass(frozen=True)
class ModelSpec:
    """``softmax`` (built in: num_features, num_classes) or ``custom`` (participants initialize weights)."""

    name: str = CUSTOM_MODEL
    num_features: int = 0
    num_classes: int = 0


@dataclass(frozen=True)
class SessionConfig:
    session_id: str
    rounds: int
    storage: StorageSpec
    epochs: int = 1
    min_participants: int = 1
    fraction: float = 1.0
    heartbeat_period: float = 1.0
    heartbeat_timeout: float = 5.0
    stall_timeout: float = 120.0
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    status_host: str = "127.0.0.1"
    status_port: int = 0
    initial_model: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    linger: float = 5.0


def _get(data: dict[str, Any], name: str, kind: type, expected: str, default: Any = ...) -> Any:
    prefix, _, key = name.rpartition(".")
    if key not in data:
        if default is ...:
            raise ConfigError(name, expected + " (missing)")
        return default
    value = data[key]
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(name, expected, value)
    return float(value) if kind is float else value


def _int(data: dict[str, Any], name: str, minimum: int, default: Any = ...) -> int:
    expected = f"an integer >= {minimum}"
    value = _get(data, name, int, expected, default)
    if value < minimum:
        raise ConfigError(name, expected, value)
    return value


def _positive(data: dict[str, Any], name: str, default: Any = ...) -> float:
    value = _get(data, name, float, "a number > 0", default)
    if value <= 0:
        raise ConfigError(name, "a number > 0", value)
    return value


def _non_negative(data: dict[str, Any], name: str, default: Any = ...) -> float:
    value = _get(data, name, float, "a number >= 0", default)
    if value < 0:
        raise ConfigError(name, "a number >= 0", value)
    return value


def _port(data: dict[str, Any], name: str) -> int:
    value = _int(data, name, 0, 0)
    if value > 65535:
        raise ConfigError(name, "a TCP port 0..65535 (0 = pick a free one)", value)
    return value


def _storage(data: Any) -> StorageSpec:
    if not isinstance(data, dict):
        raise ConfigError("storage", "an object {endpoint, bucket, prefix}", data)
    bucket = _get(data, "storage.bucket", str, "an S3 bucket name")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise ConfigError("storage.bucket", "an S3 bucket name (3-63 of a-z 0-9 . -)", bucket)
    prefix = _get(data, "storage.prefix", str, "a key prefix string", "").strip("/")
    endpoint = _get(data, "storage.endpoint", str, "an http(s) URL", None)
    if endpoint is not None and not re.match(r"https?://[^/\s]+", endpoint):
        raise ConfigError("storage.endpoint", "an http(s) URL", endpoint)
    forbidden = {"access_key_id", "secret_access_key", "aws_access_key_id", "aws_secret_access_key"}
    if forbidden & set(data):
        raise ConfigError(
            "storage", "no credentials (they come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    return StorageSpec(bucket=bucket, prefix=f"{prefix}/" if prefix else "", endpoint=endpoint)


def _model(data: Any) -> ModelSpec:
    if data is None:
        return ModelSpec()
    if not isinstance(data, dict):
        raise ConfigError("model", "an object {name, ...}", data)
    name = _get(data, "model.name", str, f"one of {', '.join((*BUILTIN_MODELS, CUSTOM_MODEL))}")
    if name == CUSTOM_MODEL:
        return ModelSpec()
    if name not in BUILTIN_MODELS:
        raise ConfigError("model.name", f"one of {', '.join((*BUILTIN_MODELS, CUSTOM_MODEL))}", name)
    return ModelSpec(
        name=name,
        num_features=_int(data, "model.num_features", 1),
        num_classes=_int(data, "model.num_classes", 2),
    )


def parse(data: Any) -> SessionConfig:
    """Validate a decoded config; raises :class:`ConfigError` naming the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("config", "a JSON/TOML object", type(data).__name__)
    session_id = _get(data, "session_id", str, "a non-empty string of letters, digits, . _ -")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", session_id):
        raise ConfigError("session_id", "a non-empty string of letters, digits, . _ -", session_id)
    fraction = _get(data, "fraction", float, "a number in (0, 1]", 1.0)
    if not 0 < fraction <= 1:
        raise ConfigError("fraction", "a number in (0, 1]", fraction)
    initial_model = _get(data, "initial_model", str, "an s3://bucket/key URL of an .npz", None)
    if initial_model is not None and not re.fullmatch(r"s3://[^/]+/.+", initial_model):
        raise ConfigError("initial_model", "an s3://bucket/key URL of an .npz", initial_model)
    if "storage" not in data:
        raise ConfigError("storage", "an object {endpoint, bucket, prefix} (missing)")
    return SessionConfig(
        session_id=session_id,
        rounds=_int(data, "rounds", 1),
        epochs=_int(data, "epochs", 1, 1),
        min_participants=_int(data, "min_participants", 1, 1),
        fraction=fraction,
        heartbeat_period=_positive(data, "heartbeat_period", 1.0),
        heartbeat_timeout=_positive(data, "heartbeat_timeout", 5.0),
        stall_timeout=_positive(data, "stall_timeout", 120.0),
        grpc_host=_get(data, "grpc_host", str, "a host name or IP address", "127.0.0.1"),
        grpc_port=_port(data, "grpc_port"),
        status_host=_get(data, "status_host", str, "a host name or IP address", "127.0.0.1"),
        status_port=_port(data, "status_port"),
        storage=_storage(data["storage"]),
        initial_model=initial_model,
        model=_model(data.get("model")),
        linger=_non_negative(data, "linger", 5.0),
    )


def load(path: Path) -> SessionConfig:
    """Read and validate a ``.json`` or ``.toml`` session config."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("--config", "a readable JSON or TOML file", f"{path} ({exc.strerror})") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigError("--config", f"valid {path.suffix.lstrip('.') or 'JSON'}", str(exc)) from None
    return parse(data)
