"""``nvfl compose env``: the ``.env`` file of the top-level ``docker-compose.yaml``.

The compose file has no default secrets: this writes fresh random ones (PostgreSQL, MinIO, Airflow's admin
password and JWT/API secrets) plus the Airflow connections of the stack: the Nevermined actors on the
compose devchain (anvil's public dev accounts: a dev chain only), the S3 storage on MinIO and the Docker
engine the workloads run on. Every service uses host networking, like the workloads (DESIGN.md §5), so all
addresses are 127.0.0.1 and the ports below.
"""

from __future__ import annotations

import os
import secrets

PORTS = {"POSTGRES_PORT": 5432, "MINIO_PORT": 9000, "MINIO_CONSOLE_PORT": 9001, "AIRFLOW_PORT": 8080}
CHAIN_PORT = 8545
BUCKET = "nvfl"
DEPLOYMENT_FILE = "/nvfl/chain/deployment.json"  # written by the devchain service into a shared volume
DOCKER_CONN_ID = "nvfl_docker"


def env(docker_socket: str = "/var/run/docker.sock") -> dict[str, str]:
    """Variables for ``.env`` (secret: keep the file 0600)."""
    from airflow_nevermined_fl.devstack import chain, s3
    from airflow_nevermined_fl.devstack.airflow import STORAGE_CONN_ID
    from airflow_nevermined_fl.launchers.docker import connection_json

    minio_user, minio_password = f"nvfl-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    chain_state = {"rpc_url": f"http://127.0.0.1:{CHAIN_PORT}", "deployment_file": DEPLOYMENT_FILE}
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
    connections = chain.connection_uris(chain_state | {"chain_id": chain.CHAIN_ID})
    connections[STORAGE_CONN_ID] = s3.connection_uri(s3_state)
    connections[DOCKER_CONN_ID] = connection_json(docker_url=f"unix://{docker_socket}")
    return values | {f"AIRFLOW_CONN_{cid.upper()}": uri for cid, uri in connections.items()}


def dotenv(values: dict[str, str]) -> str:
    """``KEY='value'`` lines (single-quoted: compose reads them literally)."""
    for key, value in values.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"{key}: value not representable in a .env file")
    return "".join(f"{key}='{value}'\n" for key, value in values.items())
