"""docker-compose.yaml validated by a real compose (``docker-compose config``) with the ``.env`` that
``nvfl compose env`` writes; no default secrets in the file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_nevermined_fl import compose
from airflow_nevermined_fl.launchers.docker import DockerTarget
from airflow_nevermined_fl.paths import PROJECT_DIR

COMPOSE_FILE = PROJECT_DIR / "docker-compose.yaml"
LONG_RUNNING = {
    "postgres",
    "minio",
    "devchain",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if not binary:
        pytest.skip("no docker-compose on PATH (.ci/run installs Debian's docker-compose)")
    argv = [binary, "-f", str(COMPOSE_FILE), "--project-directory", str(PROJECT_DIR)]
    return subprocess.run([*argv, "--env-file", str(env_file), "config"], capture_output=True, text=True)


@pytest.fixture(scope="module")
def env_values(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    values = compose.env()
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text(compose.dotenv(values))
    return values, env_file


@pytest.fixture(scope="module")
def config(env_values: tuple[dict[str, str], Path]) -> dict[str, Any]:
    result = _compose_config(env_values[1])
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_services_health_checks_and_wiring(config: dict[str, Any], env_values: Any) -> None:
    values, _ = env_values
    services = config["services"]
    assert set(services) == LONG_RUNNING | {"minio-init", "airflow-init"}
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["network_mode"] == "host", name
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        depends = services[name]["depends_on"]
        assert depends["devchain"]["condition"] == "service_healthy"
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["AIRFLOW_CONN_NVFL_STORAGE_DEFAULT"] == values["AIRFLOW_CONN_NVFL_STORAGE_DEFAULT"]
        assert values["POSTGRES_PASSWORD"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The workloads' engine: the scheduler (runs tasks) and triggerer (watches workloads) get the socket.
    for name in ("airflow-scheduler", "airflow-triggerer"):
        targets = [v.split(":")[1] if isinstance(v, str) else v["target"] for v in services[name]["volumes"]]
        assert "/var/run/docker.sock" in targets, name
    docker_conn = json.loads(values["AIRFLOW_CONN_NVFL_DOCKER"])
    target = DockerTarget.from_extra(docker_conn["extra"], "nvfl_docker")
    assert target.url == "unix:///var/run/docker.sock" and target.advertised_host == "127.0.0.1"


def test_connections_parse_as_airflow_connections(env_values: Any) -> None:
    from airflow.sdk import Connection

    values, _ = env_values
    consumer = Connection.from_uri(values["AIRFLOW_CONN_NEVERMINED_CONSUMER"], conn_id="nevermined_consumer")
    assert consumer.conn_type == "nevermined" and consumer.host == "http://127.0.0.1:8545"
    assert consumer.extra_dejson["deployment_file"] == compose.DEPLOYMENT_FILE
    storage = Connection.from_uri(values["AIRFLOW_CONN_NVFL_STORAGE_DEFAULT"], conn_id="s")
    assert storage.login == values["MINIO_ROOT_USER"] and storage.password == values["MINIO_ROOT_PASSWORD"]
    assert storage.extra_dejson == {"endpoint_url": "http://127.0.0.1:9000", "bucket": "nvfl"}


def test_no_default_secrets_and_a_clear_error_without_env(env_values: Any, tmp_path: Path) -> None:
    values, _ = env_values
    text = COMPOSE_FILE.read_text()
    secret_keys = ("PASSWORD", "SECRET", "AIRFLOW_CONN_")
    assert not [k for k, v in values.items() if any(s in k for s in secret_keys) and v in text]
    empty = tmp_path / ".env"
    empty.write_text("")
    result = _compose_config(empty)
    assert result.returncode != 0
    assert "run nvfl compose env" in result.stderr


def test_fresh_secrets_each_time() -> None:
    first, second = compose.env(), compose.env()
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"):
        assert first[key] != second[key] and len(first[key]) >= 16
