"""Devstack component "gateways": one provider gateway per dev provider account, on 127.0.0.1.

The coordinator provider sells an ``fl-coordinator`` service (10 tokens), three data providers an
``fl-participant`` service each (5 tokens) on their shard of the digits dataset split non-IID. Each provider
has ``<home>/gateways/<name>/``: ``key`` (its private key, 0600), ``storage.json`` (the devstack SeaweedFS
keys, 0600: the session storage is shared for now), ``data/`` (its shard only), ``gateway.json`` (config),
``state/`` and ``gateway.log``. Each runs ``nvfl gateway serve`` on a free port and publishes its asset DID
with its own key. The state keeps pids, ports, URLs, DIDs, addresses and prices; :func:`public` never a key
or a path. ``backend="docker"`` runs the workloads on the local Docker engine instead of as processes;
``backend="kubernetes"`` in the cluster of a given connection, where the pods cannot see this machine's files:
each data provider's shard is then uploaded to the storage and its service names that ``s3://`` URL.
Every service publishes the default policy (:mod:`airflow_nevermined_fl.protocol.policy`: softmax, the
default bounds and limits); on Docker its runtime image is pinned by the image id on the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from airflow_nevermined_fl import process
from airflow_nevermined_fl.devtools.devstack import chain, s3

HOST = "127.0.0.1"
BACKENDS = ("local", "docker", "kubernetes")
DATASET = "digits.npz"
DATASETS_PREFIX = "datasets"  # kubernetes: the shards' keys in the storage bucket
# The consumer's Airflow reads the stack's published providers from this variable (see session_providers).
SESSION_PROVIDERS_ENV = "NVFL_SESSION_PROVIDERS"


@dataclass(frozen=True)
class Provider:
    """One dev provider: its gateway's name (= its service's name), account index, service and price
    (tokens, a plain decimal string)."""

    name: str
    account: int
    type: str
    price: str
    shard: int | None = None  # data providers: index of their shard of the partition


PROVIDERS: tuple[Provider, ...] = (
    Provider("coordinator", chain.COORDINATOR_PROVIDER, "fl-coordinator", "10"),
    *(
        Provider(f"provider-{n + 1}", index, "fl-participant", "5", shard=n)
        for n, index in enumerate(chain.DATA_PROVIDERS)
    ),
)


def write_secret(path: Path, text: str) -> None:
    """Write a secret file (mode 0600, also when it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def partition_demo(out_dir: Path) -> dict[str, Any]:
    """The demo data: digits split non-IID (seed 0) over the data providers; the partition manifest."""
    from airflow_nevermined_fl.devtools import data

    return data.partition(out_dir, len(chain.DATA_PROVIDERS), scheme="non-iid", seed=0)


def _write_shards(root: Path, providers: list[Provider]) -> None:
    """Each data provider's shard of the demo data into its own ``data/`` only."""
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        manifest = partition_demo(Path(tmp))
        for p in providers:
            if p.shard is not None:
                target = root / p.name / "data" / DATASET
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(manifest["providers"][p.shard]["path"], target)


def _backend(backend: str, data_dir: Path | None, connection: dict[str, Any] | None) -> dict[str, Any]:
    """The gateway's ``backend`` block: ``connection`` as given; docker's default: the local engine, the
    provider's data mounted read-only."""
    if backend == "docker" and connection is None:
        from airflow_nevermined_fl.gateway.launchers.docker import connection_json

        docker_url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        mounts = [f"{data_dir}:{data_dir}:ro"] if data_dir else []
        connection = json.loads(connection_json(docker_url=docker_url, mounts=mounts))
    return {"type": backend, "connection": connection}


def _policy(backend: dict[str, Any]) -> dict[str, Any] | None:
    """The services' policy: the default; on the docker backend, the runtime image pinned by its id on the
    engine (the tag as is while it is not built)."""
    if backend["type"] != "docker":
        return None
    from docker import APIClient
    from docker.errors import DockerException

    from airflow_nevermined_fl.protocol.policy import DEFAULT_IMAGE

    try:
        extra = (backend.get("connection") or {}).get("extra") or {}
        url = extra.get("docker_url") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        engine = APIClient(base_url=url, version="auto")
        pin = engine.inspect_image(DEFAULT_IMAGE)["Id"]
    except (DockerException, OSError):
        return None
    return {"images": {DEFAULT_IMAGE: pin}}


def _dataset_key(p: Provider) -> str:
    return f"{DATASETS_PREFIX}/{p.name}/{DATASET}"


def _upload_shards(root: Path, providers: list[Provider], s3_state: dict[str, Any]) -> None:
    """Each data provider's shard (in its ``data/``) to the storage, where :func:`_config` names it."""
    client = s3.client(s3_state)
    for p in providers:
        if p.shard is not None:
            client.upload_file(str(root / p.name / "data" / DATASET), s3_state["bucket"], _dataset_key(p))


def config_document(
    directory: Path,
    p: Provider,
    port: int,
    backend: dict[str, Any],
    chain_state: dict[str, Any],
    s3_state: dict[str, Any],
    dataset: str | None,
) -> dict[str, Any]:
    """A gateway's config (see :mod:`airflow_nevermined_fl.gateway.config`) for provider ``p`` listening on
    127.0.0.1:``port``: its key (``key``), storage credentials (``storage.json``) and state under
    ``directory``; ``chain_state``/``s3_state`` as the chain/s3 components give them."""
    service: dict[str, Any] = {"name": p.name, "type": p.type, "price": p.price}
    if (policy := _policy(backend)) is not None:
        service["policy"] = policy
    return {
        "name": p.name,
        "key_file": str(directory / "key"),
        "chain": {
            "rpc_url": chain_state["rpc_url"],
            "deployment_file": chain_state["deployment_file"],
            "chain_id": chain_state["chain_id"],
            "block_time": chain_state.get("block_time", 1),
        },
        "listen": {"host": HOST, "port": port},
        "state_dir": str(directory / "state"),
        "backend": backend,
        "storage": {
            "endpoint_url": s3_state["endpoint"],
            "bucket": s3_state["bucket"],
            "credentials_file": str(directory / "storage.json"),
        },
        "services": [(service | {"dataset": dataset}) if dataset else service],
    }


def _config(
    directory: Path,
    p: Provider,
    port: int,
    backend: str,
    chain_state: dict[str, Any],
    s3_state: dict[str, Any],
    connection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The devstack gateway's config: its data in ``<directory>/data`` (kubernetes: uploaded to the storage),
    workloads on ``backend`` (``connection``: see :func:`start`)."""
    data_dir = directory / "data" if p.shard is not None else None
    dataset = str(data_dir / DATASET) if data_dir else None
    if dataset and backend == "kubernetes":
        dataset = f"s3://{s3_state['bucket']}/{_dataset_key(p)}"
    block = _backend(backend, data_dir, connection)
    return config_document(directory, p, port, block, chain_state, s3_state, dataset)


def _current(entry: dict[str, Any] | None, config: dict[str, Any]) -> bool:
    """Whether ``entry``'s gateway runs with exactly ``config``."""
    if entry is None or not process.service_alive(entry, HOST):
        return False
    return json.loads(Path(entry["config_file"]).read_text()) == config


def _port(entry: dict[str, Any] | None) -> int:
    """A stopped gateway's previous port when free (its published URL stays valid), else a free one."""
    if entry and not process.port_open(HOST, int(entry["port"])):
        return int(entry["port"])
    return process.free_port(HOST)


def _wait_info(url: str, address: str, pid: int, timeout: float = 60.0) -> None:
    """Until the gateway at ``url`` answers ``GET /api/v1/info``; fail early when it exited."""
    from airflow_nevermined_fl.protocol.client import GatewayClient, GatewayError

    client = GatewayClient(url, audience=address, timeout=2.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.info()
            return
        except GatewayError as exc:
            if not process.pid_alive(pid):
                raise RuntimeError(f"gateway {url} (pid {pid}) exited during start; see its log") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {url} did not answer within {timeout:.0f}s: {exc}") from None
            time.sleep(0.2)


def _launch(p: Provider, directory: Path, config: dict[str, Any], storage: str) -> dict[str, Any]:
    """Write the provider's files and start ``nvfl gateway serve`` on them; its state entry (no DID yet)."""
    write_secret(directory / "key", chain.account(p.account).key.to_0x_hex())
    write_secret(directory / "storage.json", storage)
    config_file = directory / "gateway.json"
    config_file.write_text(json.dumps(config, indent=2))
    port = config["listen"]["port"]
    return {
        "name": p.name,
        "type": p.type,
        "address": chain.account(p.account).address,
        "pid": _serve(config_file),
        "port": port,
        "url": f"http://{HOST}:{port}",
        "config_file": str(config_file),
        "log": str(directory / "gateway.log"),
    }


def _serve(config_file: Path) -> int:
    """Start ``nvfl gateway serve`` on a gateway's config (its log and files beside it); the pid."""
    argv = [str(Path(sys.executable).parent / "nvfl"), "gateway", "serve", "--config", str(config_file)]
    # The provider's process: nothing of the consumer's (its Airflow connections) is passed on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    return process.start(argv, config_file.parent / "gateway.log", env=env, cwd=config_file.parent)


def restart(entry: dict[str, Any]) -> dict[str, Any]:
    """Stop one gateway of the component state (by pid) and serve it again on the same config, port and
    state (its executions resume from their records); ``entry`` is updated with the new pid."""
    process.stop_service(entry)
    entry["pid"] = _serve(Path(entry["config_file"]))
    _wait_info(entry["url"], entry["address"], entry["pid"])
    return entry


def start(
    home: Path,
    chain_state: dict[str, Any],
    s3_state: dict[str, Any],
    backend: str = "local",
    suffix: str = "",
    previous: dict[str, Any] | None = None,
    connection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run and publish the four gateways (names + ``suffix``) under ``<home>/gateways/``; reuse those of
    ``previous`` that run with the same config, restart the others on their former port (an asset's DID
    follows its gateway's URL). ``connection``: the backend's Airflow connection (JSON form) in every
    gateway's config; required for kubernetes, docker's default is the local engine. Returns the component
    state."""
    from airflow_nevermined_fl.gateway.config import load
    from airflow_nevermined_fl.gateway.publish import publish

    if backend not in BACKENDS:
        raise ValueError(f"gateways backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "kubernetes" and connection is None:
        raise ValueError("gateways backend kubernetes: needs the cluster's connection")
    if backend == "local" and connection is not None:
        raise ValueError("gateways backend local: takes no connection")
    root = home / "gateways"
    root.mkdir(parents=True, exist_ok=True)
    old: dict[str, dict[str, Any]] = (previous or {}).get("gateways", {})
    gateways: dict[str, dict[str, Any]] = {}
    pending: list[tuple[Provider, Path, dict[str, Any]]] = []
    providers = [replace(p, name=p.name + suffix) for p in PROVIDERS]
    for p in providers:
        entry, directory = old.get(p.name), root / p.name
        if entry is not None:
            config = _config(directory, p, int(entry["port"]), backend, chain_state, s3_state, connection)
            if _current(entry, config):
                gateways[p.name] = entry
                continue
            process.stop_service(entry)
        config = _config(directory, p, _port(entry), backend, chain_state, s3_state, connection)
        pending.append((p, directory, config))
    if pending:
        _write_shards(root, [p for p, _, _ in pending])
        if backend == "kubernetes":
            _upload_shards(root, [p for p, _, _ in pending], s3_state)
    keys = s3.env(s3_state)  # the session storage is shared for now
    storage = json.dumps(
        {"access_key": keys["AWS_ACCESS_KEY_ID"], "secret_key": keys["AWS_SECRET_ACCESS_KEY"]}
    )
    launched: list[dict[str, Any]] = []
    try:  # a gateway that failed to come up, and those started with it, are not left running
        for p, directory, config in pending:
            launched.append(_launch(p, directory, config, storage))
        for entry in launched:
            _wait_info(entry["url"], entry["address"], entry["pid"])
            (asset,) = publish(load(entry["config_file"]))
            entry.update(did=asset["did"], ddo_url=asset["ddo_url"], price=asset["price"])
    except BaseException:
        for entry in launched:
            process.stop_service(entry)
        raise
    gateways |= {entry["name"]: entry for entry in launched}
    return {"backend": backend, "gateways": {p.name: gateways[p.name] for p in providers}}


def up(home: Path, previous: dict[str, Any] | None, backend: str | None = None) -> dict[str, Any]:
    """The devstack's four gateways; ``backend`` ``local``/``docker`` (default: as before, else local)."""
    from airflow_nevermined_fl.devtools import devstack

    stack = devstack.load_state()
    chosen = backend or (previous or {}).get("backend") or "local"
    return start(home, stack["chain"], stack["s3"], chosen, previous=previous)


def alive(state: dict[str, Any]) -> bool:
    return all(process.service_alive(entry, HOST) for entry in state["gateways"].values())


def down(state: dict[str, Any]) -> None:
    for entry in state["gateways"].values():
        process.stop_service(entry)


def public(state: dict[str, Any]) -> dict[str, Any]:
    """Per provider: url, DID, address, price, service type (never a key or a path); the backend."""
    fields = ("url", "did", "address", "price", "type")
    return {
        "gateways": {name: {k: entry[k] for k in fields} for name, entry in state["gateways"].items()},
        "gateways_backend": state["backend"],
    }


def session_providers(state: dict[str, Any]) -> dict[str, Any]:
    """A session conf's providers by asset DID: ``{"coordinator": {"did"}, "data_providers": [{"did"}]}``
    (``state``: the component state or :func:`public`'s)."""
    entries = list(state["gateways"].values())
    (coordinator,) = [e for e in entries if e["type"] == "fl-coordinator"]
    return {
        "coordinator": {"did": coordinator["did"]},
        "data_providers": [{"did": e["did"]} for e in entries if e["type"] == "fl-participant"],
    }
