"""``nvfl compose env``: the ``.env`` file of the top-level ``docker-compose.yaml``; and the entry point of
its provider gateway services (``python -m airflow_nevermined_fl.devtools.compose gateway``).

The compose file has no default secrets: this writes fresh random ones (PostgreSQL, Redis, Airflow's admin
password and JWT/API secrets, one S3 identity per party), the consumer's Airflow connections (its account
on the compose devchain, anvil's public dev accounts: a dev chain only; its own S3 identity) and, per
provider gateway, its config, its own key and its own S3 identity. No party gets another's key, and none
an administrator's storage key: SeaweedFS creates the bucket itself; each identity may read, write and
list that bucket only (workloads get presigned URLs from their gateway). The Airflow services get no
provider key: each gateway starts the workloads of its provider on the Docker engine. Every service uses
host networking, like the workloads, so all addresses are 127.0.0.1 and the ports below (or free ones).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from airflow_nevermined_fl import __version__

PORTS = {
    "POSTGRES_PORT": 5432,
    "REDIS_PORT": 6379,
    "S3_PORT": 8333,
    "AIRFLOW_PORT": 8080,
    "NVFL_CHAIN_PORT": 8545,
}
GATEWAY_PORT = 8030  # coordinator's; data providers' the next ones
# SeaweedFS's other listeners (its defaults include 8080, Airflow's port): chosen too.
SEAWEEDFS_PORTS = {
    "master.port": 9333,
    "master.port.grpc": 19333,
    "volume.port": 9340,
    "volume.port.grpc": 19340,
    "filer.port": 8888,
    "filer.port.grpc": 18888,
    "s3.port.grpc": 18333,
    "s3.port.iceberg": 8181,
    "s3.port.lance": 8182,
    "admin.port": 23646,
    "admin.port.grpc": 33646,
}
BUCKET = "nvfl"
CONSUMER_POOL = "nevermined_consumer"  # created by airflow-init: one slot, the consumer's transactions
# The images `nvfl images build --all` makes; without these lines the compose file names upstream ones.
LOCAL_IMAGES = {
    "POSTGRES_IMAGE": f"airflow-nevermined-fl-postgres:{__version__}",
    "REDIS_IMAGE": f"airflow-nevermined-fl-redis:{__version__}",
    "SEAWEEDFS_IMAGE": f"airflow-nevermined-fl-seaweedfs:{__version__}",
}
DEPLOYMENT_FILE = "/nvfl/chain/deployment.json"  # written by the devchain service into a shared volume
GATEWAY_HOME = Path("/opt/airflow/gateway")  # in a gateway service: its own volume
DOCKER_SOCKET = "/var/run/docker.sock"  # where the gateway services mount the engine's socket


def gateway_variable(name: str, what: str) -> str:
    """The ``.env`` variable of gateway ``name``'s ``what`` (``CONFIG``, ``KEY``)."""
    return f"NVFL_GATEWAY_{name.upper().replace('-', '_')}_{what}"


def _s3_identity(name: str) -> dict[str, Any]:
    """A SeaweedFS identity of its own (fresh keys) that may read, write and list the bucket only."""
    keys = {"accessKey": f"NVFL{secrets.token_hex(8).upper()}", "secretKey": secrets.token_urlsafe(30)}
    actions = [f"{action}:{BUCKET}" for action in ("Read", "Write", "List", "Tagging")]
    return {"name": name, "credentials": [keys], "actions": actions}


def _s3_state(identity: dict[str, Any], endpoint: str) -> dict[str, Any]:
    keys = identity["credentials"][0]
    return {"access_key": keys["accessKey"], "secret_key": keys["secretKey"], "endpoint": endpoint}


def _gateways(
    chain_state: dict[str, Any], endpoint: str, gateway_port: int
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Per provider gateway: its config (its data provider's dataset on S3), its key and its S3 keys
    (secret); and the gateways' S3 identities."""
    from airflow_nevermined_fl.devtools.devstack import chain, gateways
    from airflow_nevermined_fl.gateway.launchers.docker import connection_json

    backend = {
        "type": "docker",
        "connection": json.loads(connection_json(docker_url=f"unix://{DOCKER_SOCKET}")),
    }
    values, identities = {}, []
    for i, p in enumerate(gateways.PROVIDERS):
        dataset = f"s3://{BUCKET}/providers/{p.name}/{gateways.DATASET}" if p.shard is not None else None
        identity = _s3_identity(f"gateway-{p.name}")
        identities.append(identity)
        s3_state = _s3_state(identity, endpoint) | {"bucket": BUCKET}
        config = gateways.config_document(
            GATEWAY_HOME, p, gateway_port + i, backend, chain_state, s3_state, dataset
        )
        values[gateway_variable(p.name, "CONFIG")] = json.dumps(config)
        values[gateway_variable(p.name, "KEY")] = chain.account(p.account).key.to_0x_hex()
        values[gateway_variable(p.name, "S3_ACCESS_KEY")] = s3_state["access_key"]
        values[gateway_variable(p.name, "S3_SECRET_KEY")] = s3_state["secret_key"]
    return values, identities


def free_ports() -> dict[str, int]:
    """Every port of the stack free on this host now (the defaults: :data:`PORTS`, :data:`GATEWAY_PORT`,
    :data:`SEAWEEDFS_PORTS`); for a stack next to other services, or several stacks."""
    from airflow_nevermined_fl.devtools.devstack.gateways import PROVIDERS
    from airflow_nevermined_fl.process import free_port

    ports = {name: free_port() for name in [*PORTS, *SEAWEEDFS_PORTS]}
    # The gateways take GATEWAY_PORT and the next ones: one free block of them.
    return ports | {"GATEWAY_PORT": _free_block(len(PROVIDERS))}


def _free_block(size: int) -> int:
    """The first port of ``size`` consecutive ports free on 127.0.0.1 now."""
    from airflow_nevermined_fl.process import free_port, port_open

    while True:
        first = free_port()
        if not any(port_open("127.0.0.1", first + i) for i in range(1, size)):
            return first


def env(docker_socket: str = "/var/run/docker.sock", ports: dict[str, int] | None = None) -> dict[str, str]:
    """Variables for ``.env`` (secret: keep the file 0600); ``ports``: overrides of the default ports (any
    of :data:`PORTS`, ``GATEWAY_PORT`` and :data:`SEAWEEDFS_PORTS`; :func:`free_ports` gives all)."""
    from airflow_nevermined_fl.devtools.devstack import chain, s3
    from airflow_nevermined_fl.devtools.devstack.airflow import STORAGE_CONN_ID

    chosen = PORTS | {"GATEWAY_PORT": GATEWAY_PORT} | SEAWEEDFS_PORTS | (ports or {})
    chain_state = {
        "rpc_url": f"http://127.0.0.1:{chosen['NVFL_CHAIN_PORT']}",
        "deployment_file": DEPLOYMENT_FILE,
        "chain_id": chain.CHAIN_ID,
    }
    endpoint = f"http://127.0.0.1:{chosen['S3_PORT']}"
    consumer = _s3_identity("consumer")
    gateway_values, gateway_identities = _gateways(chain_state, endpoint, chosen["GATEWAY_PORT"])
    seaweedfs_flags = " ".join(f"-{flag}={chosen[flag]}" for flag in SEAWEEDFS_PORTS)
    values = (
        {key: str(chosen[key]) for key in PORTS}
        | LOCAL_IMAGES
        | {
            "SEAWEEDFS_PORT_FLAGS": seaweedfs_flags,
            "NVFL_BUCKET": BUCKET,
            "NVFL_CONSUMER_POOL": CONSUMER_POOL,
            "DOCKER_SOCKET": docker_socket,
            "DOCKER_GID": str(os.stat(docker_socket).st_gid) if os.path.exists(docker_socket) else "0",
            "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
            "REDIS_PASSWORD": secrets.token_urlsafe(24),
            "S3_IDENTITIES": json.dumps({"identities": [consumer, *gateway_identities]}),
            "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(32),
        }
    )
    connections = {
        chain.CONSUMER_CONN_ID: chain.consumer_connection_uri(chain_state),
        STORAGE_CONN_ID: s3.connection_uri(_s3_state(consumer, endpoint) | {"bucket": BUCKET}),
    }
    values |= {f"AIRFLOW_CONN_{cid.upper()}": uri for cid, uri in connections.items()}
    return values | gateway_values


def write_env(path: Path, values: dict[str, str]) -> None:
    """``values`` as a new ``.env`` at ``path``, mode 0600 from its creation; never over an existing one
    (its secrets open the stack's volumes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(dotenv(values))


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` in the compose stack: a worker's own name
    (``NVFL_WORKER_NAME``; its containers share the host's network, hence its host name), else the host's."""
    return os.environ.get("NVFL_WORKER_NAME") or socket.getfqdn()


def dotenv(values: dict[str, str]) -> str:
    """``KEY='value'`` lines (single-quoted: compose reads them literally)."""
    for key, value in values.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"{key}: value not representable in a .env file")
    return "".join(f"{key}='{value}'\n" for key, value in values.items())


def write_gateway_files(environ: MutableMapping[str, str]) -> Path:
    """In a gateway service: its key and storage credentials (0600) and its config, from the variables
    compose gives it (``NVFL_GATEWAY_CONFIG``, ``NVFL_GATEWAY_KEY``, ``NVFL_GATEWAY_S3_ACCESS_KEY``,
    ``NVFL_GATEWAY_S3_SECRET_KEY``); the secret ones are removed from ``environ``. Returns the config file."""
    from airflow_nevermined_fl.devtools.devstack.gateways import write_secret

    config = json.loads(environ["NVFL_GATEWAY_CONFIG"])
    key_file = Path(config["key_file"])
    write_secret(key_file, environ.pop("NVFL_GATEWAY_KEY"))
    credentials = {
        "access_key": environ.pop("NVFL_GATEWAY_S3_ACCESS_KEY"),
        "secret_key": environ.pop("NVFL_GATEWAY_S3_SECRET_KEY"),
    }
    write_secret(Path(config["storage"]["credentials_file"]), json.dumps(credentials))
    path = key_file.with_name("gateway.json")
    path.write_text(json.dumps(config, indent=2))
    return path


def _upload_demo_data(config_file: Path) -> None:
    """A data provider's demo data (its shard of the partition) at its ``s3://`` dataset, when missing."""
    from airflow_nevermined_fl.devtools.devstack.gateways import PROVIDERS, partition_demo
    from airflow_nevermined_fl.gateway.config import load
    from airflow_nevermined_fl.gateway.resources import Provider
    from airflow_nevermined_fl.objectstore import split_url

    config = load(config_file)
    provider = Provider(config)
    for service in config.services:
        shard = next((p.shard for p in PROVIDERS if p.name == service.name), None)
        if shard is None or service.dataset is None or provider.dataset_present(service):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            manifest = partition_demo(Path(tmp))
            provider.s3.upload_file(manifest["providers"][shard]["path"], *split_url(service.dataset))


def serve_gateway() -> None:
    """A gateway service's process: its files, its demo data, its assets published, then the gateway."""
    from airflow_nevermined_fl.gateway.config import load
    from airflow_nevermined_fl.gateway.publish import publish

    config_file = write_gateway_files(os.environ)
    _upload_demo_data(config_file)
    for asset in publish(load(config_file)):
        print(f"published {asset['name']} ({asset['type']}, price {asset['price']}): {asset['did']}")
    sys.stdout.flush()
    nvfl = str(Path(sys.executable).parent / "nvfl")
    os.execv(nvfl, [nvfl, "gateway", "serve", "--config", str(config_file)])


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["gateway"]:
        print("usage: python -m airflow_nevermined_fl.devtools.compose gateway", file=sys.stderr)
        return 2
    serve_gateway()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
