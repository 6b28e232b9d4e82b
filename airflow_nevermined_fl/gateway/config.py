"""A gateway's configuration: the provider's own file (JSON), never the consumer's.

```json
{
  "name": "provider-1",
  "key_file": "/etc/nvfl/provider-1.key",          # the provider's private key (hex), mode 0600
  "chain": {"rpc_url": "http://127.0.0.1:8545", "deployment_file": "/etc/nvfl/deployment.json",
            "chain_id": 31337, "block_time": 12},  # block_time: seconds between blocks, at least
  "listen": {"host": "127.0.0.1", "port": 8030, "tls_cert": null, "tls_key": null},
  "public_url": null,                                # default: http(s)://<listen host>:<port>
  "state_dir": "/var/lib/nvfl-gateway/provider-1",   # executions, published DDOs, workload records
  "backend": {"type": "local", "connection": null},  # docker/kubernetes: that Airflow connection's JSON
  "storage": {"endpoint_url": "http://127.0.0.1:8333", "bucket": "nvfl", "region_name": "us-east-1",
              "credentials_file": "/etc/nvfl/s3.json"},   # {"access_key", "secret_key"}, mode 0600
  "services": [{"name": "provider-1", "type": "fl-participant", "price": "5",   # tokens, e.g. "0.25"
                "dataset": "/data/provider-1.npz",        # or "s3://bucket/key.npz"; never published
                "policy": {...}}],                        # what it runs: protocol/policy.py (defaults)
  "max_executions": 8,
  "max_executions_per_consumer": 4,                 # running executions of one consumer address
  "auth_max_age": 120
}
```

Plain HTTP is allowed only on a loopback address; anything else needs ``tls_cert`` and ``tls_key``.
The kubernetes backend needs its ``connection``; its pods see none of the gateway's files, so its datasets
are ``s3://`` URLs (or on the connection's ``extra.nvfl.dataset_volume``).
Secret files (key, storage credentials) must not be readable by group or others.
A service's ``policy`` (images, models, bounds, resources, log visibility; :mod:`..protocol.policy`) is
published in its asset DDO and enforced before every launch; a container backend's pins are digests
(kubernetes: ``repo@sha256:...``).
A service's ``price`` is in token units (a decimal string, or a JSON number read through its text); the
gateway converts it to base units with the token's ``decimals()`` when it publishes and checks agreements.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from airflow_nevermined_fl.contracts.errors import InvalidInputError
from airflow_nevermined_fl.contracts.timeouts import DEFAULT_BLOCK_TIME
from airflow_nevermined_fl.contracts.units import positive_tokens
from airflow_nevermined_fl.netaddr import is_loopback
from airflow_nevermined_fl.protocol.policy import Policy

ServiceType = Literal["fl-coordinator", "fl-participant"]
SERVICE_TYPES: tuple[str, ...] = ("fl-coordinator", "fl-participant")
BACKEND_TYPES: tuple[str, ...] = ("local", "docker", "kubernetes")


class GatewayConfigError(ValueError):
    """The gateway's config is invalid; the message names the field."""


@dataclass(frozen=True)
class Service:
    """One compute service the provider sells: the coordinator, or a participant on one dataset;
    ``price`` in token units, a plain decimal string (``"5"``, ``"0.25"``)."""

    name: str
    type: ServiceType
    price: str
    dataset: str | None = None
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class StorageConfig:
    """The provider's storage: where its gateway grants the session's objects (coordinator) or its datasets
    on S3 (participants). Its keys stay with the gateway."""

    endpoint_url: str
    bucket: str
    credentials_file: Path = field(repr=False)
    region_name: str = "us-east-1"

    def credentials(self) -> dict[str, str]:
        data = json.loads(_secret_file(self.credentials_file, "storage.credentials_file").read_text())
        if not data.get("access_key") or not data.get("secret_key"):
            raise GatewayConfigError("storage.credentials_file: needs access_key and secret_key")
        return {"access_key": data["access_key"], "secret_key": data["secret_key"]}


@dataclass(frozen=True)
class GatewayConfig:
    name: str
    key_file: Path = field(repr=False)
    rpc_url: str
    deployment_file: Path
    state_dir: Path
    storage: StorageConfig
    services: tuple[Service, ...]
    chain_id: int | None = None
    block_time: float = DEFAULT_BLOCK_TIME
    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_url: str | None = None
    backend: str = "local"
    backend_connection: dict[str, Any] | None = None
    max_executions: int = 8
    max_executions_per_consumer: int = 4
    auth_max_age: float = 120.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def private_key(self) -> str:
        return _secret_file(self.key_file, "key_file").read_text().strip()

    def url(self, port: int | None = None) -> str:
        """Where consumers reach this gateway (``public_url``, else the listen address)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{'https' if self.tls else 'http'}://{self.host}:{port or self.port}"

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


def _secret_file(path: Path, where: str) -> Path:
    if not path.is_file():
        raise GatewayConfigError(f"{where}: {path} does not exist")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise GatewayConfigError(f"{where}: {path} is readable by group or others; chmod 600 it")
    return path


def _get(
    data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...
) -> Any:
    if key not in data or data[key] is None:
        if default is ...:
            raise GatewayConfigError(f"{where}{key}: required")
        return default
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise GatewayConfigError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _policy(data: Any, where: str, backend: str) -> Policy:
    try:
        policy = Policy.parse(data, f"{where}policy")
    except ValueError as err:
        raise GatewayConfigError(str(err)) from None
    for name, pin in policy.images.items():
        if backend == "kubernetes" and pin is not None and "@" not in pin:
            raise GatewayConfigError(f"{where}policy.images.{name}: kubernetes pins are repo@sha256:<digest>")
    return policy


def _service(data: Any, i: int, backend: str) -> Service:
    where = f"services[{i}]."
    if not isinstance(data, dict):
        raise GatewayConfigError(f"services[{i}]: expected an object")
    kind = _get(data, "type", str, where)
    if kind not in SERVICE_TYPES:
        raise GatewayConfigError(f"{where}type: {kind!r} is not one of {list(SERVICE_TYPES)}")
    try:
        price = positive_tokens(_get(data, "price", (str, int, float), where), f"{where}price")
    except InvalidInputError as err:
        raise GatewayConfigError(str(err)) from None
    dataset = _get(data, "dataset", str, where, None)
    if kind == "fl-participant":
        if not dataset:
            raise GatewayConfigError(f"{where}dataset: required for an fl-participant service")
        if not (dataset.startswith("s3://") or dataset.startswith("/")):
            raise GatewayConfigError(f"{where}dataset: expected s3://bucket/key.npz or an absolute path")
    policy = _policy(data.get("policy"), where, backend)
    return Service(
        name=_get(data, "name", str, where), type=kind, price=price, dataset=dataset, policy=policy
    )


def _block_time(chain: dict[str, Any]) -> float:
    value = _get(chain, "block_time", (int, float), "chain.", DEFAULT_BLOCK_TIME)
    if value <= 0:
        raise GatewayConfigError("chain.block_time: must be a number of seconds > 0")
    return float(value)


def parse(data: dict[str, Any]) -> GatewayConfig:
    """Validate a config document; :class:`GatewayConfigError` names the first bad field."""
    if not isinstance(data, dict):
        raise GatewayConfigError("config: expected a JSON object")
    chain = _get(data, "chain", dict, "")
    listen = _get(data, "listen", dict, "", {})
    backend = _get(data, "backend", dict, "", {"type": "local"})
    storage = _get(data, "storage", dict, "")
    services = _get(data, "services", list, "")
    if not services:
        raise GatewayConfigError("services: at least one service is required")
    names = [s.get("name") for s in services if isinstance(s, dict)]
    if len(set(names)) != len(names):
        raise GatewayConfigError("services: names must be unique")
    backend_type = _get(backend, "type", str, "backend.", "local")
    if backend_type not in BACKEND_TYPES:
        raise GatewayConfigError(f"backend.type: {backend_type!r} is not one of {list(BACKEND_TYPES)}")
    backend_connection = _get(backend, "connection", dict, "backend.", None)
    if backend_type == "kubernetes" and backend_connection is None:
        raise GatewayConfigError("backend.connection: required for kubernetes (the cluster's connection)")
    host = _get(listen, "host", str, "listen.", "127.0.0.1")
    tls_cert, tls_key = (
        _get(listen, "tls_cert", str, "listen.", None),
        _get(listen, "tls_key", str, "listen.", None),
    )
    if bool(tls_cert) != bool(tls_key):
        raise GatewayConfigError("listen.tls_cert/tls_key: give both or neither")
    if not tls_cert and not is_loopback(host):
        raise GatewayConfigError(
            f"listen.host: {host} is not loopback; serving it needs listen.tls_cert/tls_key"
        )
    max_executions = _get(data, "max_executions", int, "", 8)
    if max_executions < 1:
        raise GatewayConfigError("max_executions: must be at least 1")
    per_consumer = _get(data, "max_executions_per_consumer", int, "", 4)
    if per_consumer < 1:
        raise GatewayConfigError("max_executions_per_consumer: must be at least 1")
    return GatewayConfig(
        name=_get(data, "name", str, ""),
        key_file=Path(_get(data, "key_file", str, "")),
        rpc_url=_get(chain, "rpc_url", str, "chain."),
        deployment_file=Path(_get(chain, "deployment_file", str, "chain.")),
        chain_id=_get(chain, "chain_id", int, "chain.", None),
        block_time=_block_time(chain),
        state_dir=Path(_get(data, "state_dir", str, "")),
        storage=StorageConfig(
            endpoint_url=_get(storage, "endpoint_url", str, "storage."),
            bucket=_get(storage, "bucket", str, "storage."),
            credentials_file=Path(_get(storage, "credentials_file", str, "storage.")),
            region_name=_get(storage, "region_name", str, "storage.", "us-east-1"),
        ),
        services=tuple(_service(s, i, backend_type) for i, s in enumerate(services)),
        host=host,
        port=_get(listen, "port", int, "listen.", 0),
        tls_cert=Path(tls_cert) if tls_cert else None,
        tls_key=Path(tls_key) if tls_key else None,
        public_url=_get(data, "public_url", str, "", None),
        backend=backend_type,
        backend_connection=backend_connection,
        max_executions=max_executions,
        max_executions_per_consumer=per_consumer,
        auth_max_age=float(_get(data, "auth_max_age", (int, float), "", 120.0)),
    )


def load(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GatewayConfigError(f"config {path}: {exc}") from None
    return parse(data)
