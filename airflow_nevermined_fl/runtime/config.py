"""The coordinator's session config: rendered by whoever starts a coordinator (:meth:`SessionConfig.to_json`),
read back by the coordinator (JSON or TOML), validated field by field before anything starts.

:class:`SessionConfig` is the one typed form, its defaults the only ones: the gateway, the bare sessions and
the benches build it and the coordinator parses into it. Standard library only, so that code outside the FL
venv imports it too. The config is public (a gateway renders it from a DDO), so it never holds credentials: a
secure session's TLS key and storage grants are secret files named by its ``channel`` (next to the config);
only a ``stock_sdk`` session takes S3 keys, from the environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

BUILTIN_MODELS = ("softmax",)
CUSTOM_MODEL = "custom"
BUCKET = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"


class ConfigError(ValueError):
    """A config field is missing or invalid; the message names the field and what was expected."""

    def __init__(self, name: str, expected: str, got: Any = None) -> None:
        got_text = "" if got is None else f", got {got!r}"
        super().__init__(f"{name}: expected {expected}{got_text}")
        self.field = name


@dataclass(frozen=True)
class StorageSpec:
    """Where weights and the final model go. ``prefix`` is normalized to "" or ``a/b/``."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None

    def __post_init__(self) -> None:
        prefix = self.prefix.strip("/")
        object.__setattr__(self, "prefix", f"{prefix}/" if prefix else "")

    def to_dict(self) -> dict[str, str]:
        data = {"bucket": self.bucket, "prefix": self.prefix}
        return {**data, "endpoint": self.endpoint} if self.endpoint is not None else data

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

    @classmethod
    def of(cls, model: dict[str, Any]) -> ModelSpec:
        """A built-in model with its sizes as given (validated when parsed); anything else is ``custom``:
        the participants bring it (``module:Class``) and initialize the weights."""
        if model.get("name") not in BUILTIN_MODELS:
            return cls()
        return cls(model["name"], model.get("num_features", 0), model.get("num_classes", 0))

    def to_dict(self) -> dict[str, Any]:
        if self.name == CUSTOM_MODEL:
            return {"name": CUSTOM_MODEL}
        return {"name": self.name, "num_features": self.num_features, "num_classes": self.num_classes}


ADDRESS = r"0x[0-9a-fA-F]{40}"


@dataclass(frozen=True)
class SeatSpec:
    """A data provider that may join the session once: its address and its dataset's declared rows (the
    bound of the ``number_samples`` it may report)."""

    address: str
    max_samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "max_samples": self.max_samples}


@dataclass(frozen=True)
class ChannelSpec:
    """A secure session's channel: the coordinator's TLS key pair and its storage grants (files next to the
    config: the key and the grants are secret), and the seats of the data providers."""

    seats: tuple[SeatSpec, ...]
    tls_cert: str = "tls.crt"
    tls_key: str = "tls.key"
    grants: str = "grants.json"

    def to_dict(self) -> dict[str, Any]:
        files = {"tls_cert": self.tls_cert, "tls_key": self.tls_key, "grants": self.grants}
        return {**files, "seats": [seat.to_dict() for seat in self.seats]}


STRATEGIES: dict[str, dict[str, float]] = {
    "fedavg": {},
    "fedprox": {"mu": 0.01},
    "fedavgm": {"eta": 1.0, "momentum": 0.9},
    "fedadagrad": {"eta": 0.1, "tau": 1e-9},
    "fedadam": {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-9},
    "fedyogi": {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
}
"""Server-side strategies and their hyper-parameters' defaults (Flower's): ``mu`` FedProx's proximal term
(participant side), ``eta`` the server learning rate, ``momentum`` FedAvgM's, ``beta1``/``beta2``/``tau``
the adaptive optimisers' (Reddi et al. 2021)."""

_UNIT_INTERVAL = ("momentum", "beta1", "beta2")  # in [0, 1); mu >= 0; eta, tau > 0


@dataclass(frozen=True)
class StrategySpec:
    """How the round's aggregate becomes the next global model: ``name`` (a key of :data:`STRATEGIES`) and
    its hyper-parameters, every one set (defaults filled)."""

    name: str = "fedavg"
    options: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", {**STRATEGIES[self.name], **self.options})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


def strategy_spec(data: Any, name: str = "strategy") -> StrategySpec:
    """Validate ``{"name": ..., <hyper-parameter>: number, ...}``; :class:`ConfigError` names the field."""
    if data is None:
        return StrategySpec()
    expected = f"one of {', '.join(STRATEGIES)}"
    if not isinstance(data, dict):
        raise ConfigError(name, f"an object {{name: {expected}, ...}}", data)
    strategy = _get(data, f"{name}.name", str, expected)
    if strategy not in STRATEGIES:
        raise ConfigError(f"{name}.name", expected, strategy)
    known = STRATEGIES[strategy]
    options: dict[str, float] = {}
    for key in data.keys() - {"name"}:
        field_name = f"{name}.{key}"
        if key not in known:
            allowed = ", ".join(known) or "none"
            raise ConfigError(field_name, f"a hyper-parameter of {strategy} ({allowed})", data[key])
        value = _get(data, field_name, float, "a finite number")
        if key in _UNIT_INTERVAL:
            ok, expected_value = 0 <= value < 1, "a number in [0, 1)"
        elif key == "mu":
            ok, expected_value = 0 <= value < 1e6, "a number >= 0"
        else:
            ok, expected_value = 0 < value < 1e6, "a number > 0"
        if not ok:  # also NaN and infinities
            raise ConfigError(field_name, expected_value, value)
        options[key] = value
    return StrategySpec(strategy, options)


def default_heartbeat_timeout(heartbeat_period: float) -> float:
    """How long past its heartbeat period a silent participant is kept: 5 periods, at least 5 s."""
    return max(5.0, 5 * heartbeat_period)


@dataclass(frozen=True)
class SessionConfig:
    """One coordinator's session. ``heartbeat_timeout`` None: :func:`default_heartbeat_timeout` of the
    period. ``grpc_port``/``status_port`` 0: any free port (the coordinator reports what it bound).
    ``linger``: seconds an ended coordinator keeps serving its final status before it exits.
    ``max_update_norm``: an upload farther from the global model than this many times the global model's
    L2 norm (at least 1) is refused and its sender removed.
    ``strategy``: how the round's aggregate becomes the next global model (:class:`StrategySpec`).
    ``channel``: TLS, seats and storage grants; None only with ``stock_sdk`` (plaintext gRPC, peers known by
    address, weights in the bucket with the environment's S3 keys: insecure, for stock xain-sdk
    participants)."""

    session_id: str
    rounds: int
    storage: StorageSpec
    epochs: int = 1
    min_participants: int = 1
    fraction: float = 1.0
    heartbeat_period: float = 1.0
    heartbeat_timeout: float = None  # type: ignore[assignment]  # set in __post_init__
    stall_timeout: float = 120.0
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    status_host: str = "127.0.0.1"
    status_port: int = 0
    initial_model: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    linger: float = 5.0
    max_update_norm: float = 1000.0
    channel: ChannelSpec | None = None
    stock_sdk: bool = False
    strategy: StrategySpec = field(default_factory=StrategySpec)

    def __post_init__(self) -> None:
        if self.heartbeat_timeout is None:
            timeout = default_heartbeat_timeout(self.heartbeat_period)
            object.__setattr__(self, "heartbeat_timeout", timeout)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form :func:`parse` reads back into an equal config."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data |= {"storage": self.storage.to_dict(), "model": self.model.to_dict()}
        data["strategy"] = self.strategy.to_dict()
        data["channel"] = self.channel.to_dict() if self.channel else None
        return {key: value for key, value in data.items() if value is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _default(name: str) -> Any:
    """The default of a :class:`SessionConfig` field."""
    return SessionConfig.__dataclass_fields__[name].default


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
    if value is not None and value <= 0:
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
    if not re.fullmatch(BUCKET, bucket):
        raise ConfigError("storage.bucket", "an S3 bucket name (3-63 of a-z 0-9 . -)", bucket)
    prefix = _get(data, "storage.prefix", str, "a key prefix string", "")
    endpoint = _get(data, "storage.endpoint", str, "an http(s) URL", None)
    if endpoint is not None and not re.match(r"https?://[^/\s]+", endpoint):
        raise ConfigError("storage.endpoint", "an http(s) URL", endpoint)
    forbidden = {"access_key_id", "secret_access_key", "aws_access_key_id", "aws_secret_access_key"}
    if forbidden & set(data):
        raise ConfigError(
            "storage", "no credentials (they come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    return StorageSpec(bucket=bucket, prefix=prefix, endpoint=endpoint)


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


def _file_name(data: dict[str, Any], name: str) -> str:
    value = _get(data, name, str, "a file name next to the config", _default_channel(name))
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value) or value.startswith("."):
        raise ConfigError(name, "a file name next to the config (no directories)", value)
    return value


def _default_channel(name: str) -> Any:
    return ChannelSpec.__dataclass_fields__[name.rpartition(".")[2]].default


def _seat(data: Any, i: int) -> SeatSpec:
    name = f"channel.seats[{i}]"
    if not isinstance(data, dict):
        raise ConfigError(name, "an object {address, max_samples}", data)
    address = _get(data, f"{name}.address", str, "a 0x address")
    if not re.fullmatch(ADDRESS, address):
        raise ConfigError(f"{name}.address", "a 0x address", address)
    return SeatSpec(address.lower(), _int(data, f"{name}.max_samples", 1))


def _channel(data: Any, stock_sdk: bool) -> ChannelSpec | None:
    if data is None:
        if stock_sdk:
            return None
        raise ConfigError("channel", "an object {tls_cert, tls_key, grants, seats} (or stock_sdk: true)")
    if stock_sdk:
        raise ConfigError("channel", "nothing with stock_sdk: true (stock participants speak plaintext)")
    if not isinstance(data, dict):
        raise ConfigError("channel", "an object {tls_cert, tls_key, grants, seats}", data)
    seats = _get(data, "channel.seats", list, "a non-empty list of {address, max_samples}")
    parsed = tuple(_seat(seat, i) for i, seat in enumerate(seats))
    if not parsed or len({seat.address for seat in parsed}) != len(parsed):
        raise ConfigError("channel.seats", "a non-empty list of distinct addresses", seats)
    return ChannelSpec(
        seats=parsed,
        tls_cert=_file_name(data, "channel.tls_cert"),
        tls_key=_file_name(data, "channel.tls_key"),
        grants=_file_name(data, "channel.grants"),
    )


def parse(data: Any) -> SessionConfig:
    """Validate a decoded config; raises :class:`ConfigError` naming the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("config", "a JSON/TOML object", type(data).__name__)
    session_id = _get(data, "session_id", str, "a non-empty string of letters, digits, . _ -")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", session_id):
        raise ConfigError("session_id", "a non-empty string of letters, digits, . _ -", session_id)
    fraction = _get(data, "fraction", float, "a number in (0, 1]", _default("fraction"))
    if not 0 < fraction <= 1:
        raise ConfigError("fraction", "a number in (0, 1]", fraction)
    initial_model = _get(data, "initial_model", str, "an s3://bucket/key URL of an .npz", None)
    if initial_model is not None and not re.fullmatch(r"s3://[^/]+/.+", initial_model):
        raise ConfigError("initial_model", "an s3://bucket/key URL of an .npz", initial_model)
    if "storage" not in data:
        raise ConfigError("storage", "an object {endpoint, bucket, prefix} (missing)")
    host = "a host name or IP address"
    stock_sdk = data.get("stock_sdk", False)
    if not isinstance(stock_sdk, bool):
        raise ConfigError("stock_sdk", "true or false", stock_sdk)
    return SessionConfig(
        session_id=session_id,
        rounds=_int(data, "rounds", 1),
        epochs=_int(data, "epochs", 1, _default("epochs")),
        min_participants=_int(data, "min_participants", 1, _default("min_participants")),
        fraction=fraction,
        heartbeat_period=_positive(data, "heartbeat_period", _default("heartbeat_period")),
        heartbeat_timeout=_positive(data, "heartbeat_timeout", None),
        stall_timeout=_positive(data, "stall_timeout", _default("stall_timeout")),
        grpc_host=_get(data, "grpc_host", str, host, _default("grpc_host")),
        grpc_port=_port(data, "grpc_port"),
        status_host=_get(data, "status_host", str, host, _default("status_host")),
        status_port=_port(data, "status_port"),
        storage=_storage(data["storage"]),
        initial_model=initial_model,
        model=_model(data.get("model")),
        linger=_non_negative(data, "linger", _default("linger")),
        max_update_norm=_positive(data, "max_update_norm", _default("max_update_norm")),
        channel=_channel(data.get("channel"), stock_sdk),
        stock_sdk=stock_sdk,
        strategy=strategy_spec(data.get("strategy")),
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
