"""Devstack component "airflow": the Airflow standalone components on 127.0.0.1 (SQLite, LocalExecutor).

``airflow standalone`` starts api-server, scheduler, dag-processor and triggerer, but its scheduler and
triggerer also open log servers on every interface (their host is hard-coded). We start the same four
components ourselves with ``--skip-serve-logs`` (with the LocalExecutor, task logs are local files),
the API bound to 127.0.0.1. AIRFLOW_HOME is ``<devstack home>/airflow``; the DAGs folder is the
repository's ``dags/``. It is the consumer's Airflow: only the consumer's and the storage's connections
are injected, as ``AIRFLOW_CONN_*`` environment variables (never written to disk by us), plus the
gateways' published providers (``NVFL_SESSION_PROVIDERS``); no provider's key. The admin password sits
in a 0600 file. A later ``up`` restarts Airflow when that environment changed. ``up`` also puts the demo's
held-out split in the consumer's bucket, where ``fl_model_evaluation`` evaluates each published model.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from airflow_nevermined_fl import process
from airflow_nevermined_fl.paths import PROJECT_DIR, state_dir

COMMANDS: dict[str, list[str]] = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
USER = "admin"
STORAGE_CONN_ID = "nvfl_storage_default"
HELDOUT_KEY = "heldout/test.npz"  # the default ``test_data`` of dags/fl_model_evaluation.py


def _airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def storage_connection_json(s3_state: dict[str, Any]) -> str:
    """The ``nvfl_storage`` connection (Airflow's JSON form) for the devstack's S3 (secret)."""
    from airflow_nevermined_fl.devtools.devstack import s3

    keys, public = s3.env(s3_state), s3.public(s3_state)
    return json.dumps(
        {
            "conn_type": "nvfl_storage",
            "login": keys["AWS_ACCESS_KEY_ID"],
            "password": keys["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": public["s3_endpoint"], "bucket": public["s3_bucket"]},
        }
    )


def connection_env(stack: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` of the consumer's Airflow (secret): its own account and the S3 storage only."""
    from airflow_nevermined_fl.devtools.devstack import chain

    return {
        f"AIRFLOW_CONN_{chain.CONSUMER_CONN_ID.upper()}": chain.consumer_connection_uri(stack["chain"]),
        f"AIRFLOW_CONN_{STORAGE_CONN_ID.upper()}": storage_connection_json(stack["s3"]),
    }


def providers_env(gateways_state: dict[str, Any]) -> dict[str, str]:
    """``NVFL_SESSION_PROVIDERS``: the gateways' published providers (by DID), the DAGs' default providers."""
    from airflow_nevermined_fl.devtools.devstack import gateways

    return {gateways.SESSION_PROVIDERS_ENV: json.dumps(gateways.session_providers(gateways_state))}


def upload_heldout(s3_state: dict[str, Any]) -> str:
    """The demo data's held-out split (no provider's shard holds its rows) to :data:`HELDOUT_KEY` in the
    devstack's bucket; its URL."""
    from airflow_nevermined_fl.devtools.devstack import gateways, s3

    with tempfile.TemporaryDirectory() as tmp:
        manifest = gateways.partition_demo(Path(tmp))
        s3.client(s3_state).upload_file(manifest["test"]["path"], s3_state["bucket"], HELDOUT_KEY)
    return f"s3://{s3_state['bucket']}/{HELDOUT_KEY}"


def _digest(env: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()


def airflow_env(airflow_home: Path, port: int, password_file: Path, dags_folder: Path) -> dict[str, str]:
    """Airflow configuration (public part) for an embedded instance (gotchas: docs/session.md)."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Providers' plugins (this provider's rounds chart, docs/ui.md) load only with eager discovery.
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
        # Waits run in the triggerer: no worker slot held while a session runs.
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        # A task's supervisor notices the end of its process at its next wake-up (default every 5 s); a
        # deferral reported after the trigger already fired makes the scheduler fail and retry the task.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "NVFL_HOME": str(state_dir()),
    }


# Imported by every Airflow process at start (``<AIRFLOW_HOME>/config`` is on sys.path): task processes are
# forked from the LocalExecutor's workers, so they inherit these modules instead of importing them again.
LOCAL_SETTINGS = '''"""Warm imports for forked task processes (web3 alone takes ~1 s)."""
import boto3  # noqa: F401
import web3  # noqa: F401
'''


def write_password_file(path: Path) -> None:
    """Create the admin password file (0600) once."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({USER: secrets.token_urlsafe(18)}, f)


def wait_healthy(url: str, timeout: float, pids: list[int]) -> None:
    """Block until the API answers its health endpoint; fail early when a component died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [pid for pid in pids if not process.pid_alive(pid)]
        if dead:
            raise RuntimeError(f"airflow component(s) exited during start (pids {dead}); see the logs")
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"airflow API at {url} not healthy within {timeout:.0f}s")


def start(
    airflow_home: Path,
    extra_env: dict[str, str],
    dags_folder: Path = PROJECT_DIR / "dags",
    timeout: float = 180,
) -> dict[str, Any]:
    """Migrate the DB and start the four components; return the component state."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    port = process.free_port()
    password_file = airflow_home / "passwords.json"
    write_password_file(password_file)
    (airflow_home / "config").mkdir(exist_ok=True)
    (airflow_home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    env = _env(airflow_home, port, password_file, dags_folder, extra_env)
    logs = airflow_home / "logs"
    migrate = process.start([_airflow_bin(), "db", "migrate"], logs / "db-migrate.log", env=env)
    while process.pid_alive(migrate):
        time.sleep(0.2)
    pids = {name: _start_component(name, port, logs, env) for name in COMMANDS}
    url = f"http://127.0.0.1:{port}"
    state = {
        "home": str(airflow_home),
        "port": port,
        "url": url,
        "pids": pids,
        "password_file": str(password_file),
        "dags_folder": str(dags_folder),
    }
    try:
        wait_healthy(url, timeout, list(pids.values()))
    except Exception:
        down(state)
        raise
    return state


def _env(
    airflow_home: Path, port: int, password_file: Path, dags_folder: Path, extra_env: dict[str, str]
) -> dict[str, str]:
    # Its connections are exactly ``extra_env``'s: none inherited from the caller's environment.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    return {**inherited, **airflow_env(airflow_home, port, password_file, dags_folder), **extra_env}


def _start_component(name: str, port: int, logs: Path, env: dict[str, str]) -> int:
    argv = [_airflow_bin(), *(a.replace("{port}", str(port)) for a in COMMANDS[name])]
    return process.start(argv, logs / f"{name}.log", env=env)


def restart(state: dict[str, Any], name: str, extra_env: dict[str, str]) -> None:
    """Stop one component (by pid) and start it again with the same settings: a crash and a restart of,
    e.g., the scheduler or the triggerer. ``extra_env``: the connections it was started with."""
    home = Path(state["home"])
    process.stop(state["pids"][name], timeout=15)
    env = _env(home, state["port"], Path(state["password_file"]), Path(state["dags_folder"]), extra_env)
    state["pids"][name] = _start_component(name, state["port"], home / "logs", env)


def up(home: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Start Airflow, or reuse ``previous`` when alive with the same connections and providers."""
    from airflow_nevermined_fl.devtools import devstack

    stack = devstack.load_state()
    upload_heldout(stack["s3"])
    extra_env = connection_env(stack) | providers_env(stack["gateways"])
    if previous and alive(previous) and previous.get("env_digest") == _digest(extra_env):
        return previous
    if previous:
        down(previous)
    return start(home / "airflow", extra_env) | {"env_digest": _digest(extra_env)}


def alive(state: dict[str, Any]) -> bool:
    return all(process.pid_alive(pid) for pid in state["pids"].values())


def down(state: dict[str, Any]) -> None:
    for pid in state["pids"].values():
        process.stop(pid, timeout=15)


def password(state: dict[str, Any]) -> str:
    return json.loads(Path(state["password_file"]).read_text())[USER]


def public(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "airflow_url": state["url"],
        "airflow_user": USER,
        "airflow_password_file": state["password_file"],
    }
