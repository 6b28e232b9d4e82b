"""``nvfl compose env``: the ``.env`` file of the top-level ``docker-compose.yaml``; and the entry point of
its provider gateway services (``python -m airflow_nevermined_fl.devtools.compose gateway``).

The compose file has no default secrets: this writes fresh random ones (PostgreSQL, MinIO, Airflow's admin
password and JWT/API secrets), the consumer's Airflow connections (its account on the compose devchain,
anvil's public dev accounts: a dev chain only; the S3 storage on MinIO) and, per provider gateway, its
config and its own key. The Airflow services get no provider key: each gateway starts the workloads of its
provider on the Docker engine. Every service uses host networking, like the workloads, so all addresses
are 127.0.0.1 and the ports below.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

PORTS = {"POSTGRES_PORT": 5432, "MINIO_PORT": 9000, "MINIO_CONSOLE_PORT": 9001, "AIRFLOW_PORT": 8080}
CHAIN_PORT = 8545
GATEWAY_PORT = 8030  # coordinator's; data providers' the next ones
BUCKET = "nvfl"
DEPLOYMENT_FILE = "/nvfl/chain/deployment.json"  # written by the devchain service into a shared volume
GATEWAY_HOME = Path("/opt/airflow/gateway")  # in a gateway service: its own volume
DOCKER_SOCKET = "/var/run/docker.sock"  # where the gateway services mount the engine's socket


def gateway_variable(name: str, what: str) -> str:
    """The ``.env`` variable of gateway ``name``'s ``what`` (``CONFIG``, ``KEY``)."""
    return f"NVFL_GATEWAY_{name.upper().replace('-', '_')}_{what}"


def _gateways(chain_state: dict[str, Any], s3_state: dict[str, Any]) -> dict[str, str]:
    """Per provider gateway: its config (its data provider's dataset on S3) and its key (secret)."""
    from airflow_nevermined_fl.devtools.devstack import chain, gateways
    from airflow_nevermined_fl.gateway.launchers.docker import connection_json

    backend = {
        "type": "docker",
        "connection": json.loads(connection_json(docker_url=f"unix://{DOCKER_SOCKET}")),
    }
    values = {}
    for i, p in enumerate(gateways.PROVIDERS):
        dataset = f"s3://{BUCKET}/providers/{p.name}/{gateways.DATASET}" if p.shard is not None else None
        config = gateways.config_document(
            GATEWAY_HOME, p, GATEWAY_PORT + i, backend, chain_state, s3_state, dataset
        )
        values[gateway_variable(p.name, "CONFIG")] = json.dumps(config)
        values[gateway_variable(p.name, "KEY")] = chain.account(p.account).key.to_0x_hex()
    return values


def env(docker_socket: str = "/var/run/docker.sock") -> dict[str, str]:
    """Variables for ``.env`` (secret: keep the file 0600)."""
    from airflow_nevermined_fl.devtools.devstack import chain, s3
    from airflow_nevermined_fl.devtools.devstack.airflow import STORAGE_CONN_ID

    minio_user, minio_password = f"nvfl-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    chain_state = {
        "rpc_url": f"http://127.0.0.1:{CHAIN_PORT}",
        "deployment_file": DEPLOYMENT_FILE,
        "chain_id": chain.CHAIN_ID,
    }
    s3_state = {
        "access_key": minio_user,
        "secret_key": minio_password,
        "endpoint": f"http://127.0.0.1:{PORTS['MINIO_PORT']}",
        "bucket": BUCKET,
    }
    values = {key: str(port) for key, port in PORTS.items()} | {
        "NVFL_CHAIN_PORT": str(CHAIN_PORT),
        "NVFL_BUCKET": BUCKET,
        "DOCKER_SOCKET": docker_socket,
        "DOCKER_GID": str(os.stat(docker_socket).st_gid) if os.path.exists(docker_socket) else "0",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "MINIO_ROOT_USER": minio_user,
        "MINIO_ROOT_PASSWORD": minio_password,
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(32),
    }
    connections = {
        chain.CONSUMER_CONN_ID: chain.consumer_connection_uri(chain_state),
        STORAGE_CONN_ID: s3.connection_uri(s3_state),
    }
    values |= {f"AIRFLOW_CONN_{cid.upper()}": uri for cid, uri in connections.items()}
    return values | _gateways(chain_state, s3_state)


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
