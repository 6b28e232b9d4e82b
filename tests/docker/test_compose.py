"""docker-compose.yaml validated by a real compose (``docker-compose config``) with the ``.env`` that
``nvfl compose env`` writes: no default secrets in the file, one gateway per provider holding its own key,
the consumer's Airflow (CeleryExecutor, two workers) with the consumer's and the storage's connections only,
one S3 identity per party and none an administrator."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_nevermined_fl.devtools import compose
from airflow_nevermined_fl.devtools.devstack import chain, gateways
from airflow_nevermined_fl.gateway.config import parse
from airflow_nevermined_fl.gateway.launchers.docker import DockerTarget
from airflow_nevermined_fl.paths import PROJECT_DIR

COMPOSE_FILE = PROJECT_DIR / "docker-compose.yaml"
WORKERS = ("airflow-worker-1", "airflow-worker-2")
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", *WORKERS)
GATEWAYS = {f"gateway-{p.name}": p for p in gateways.PROVIDERS}
LONG_RUNNING = {"postgres", "redis", "seaweedfs", "devchain", *AIRFLOW, *GATEWAYS}
PROVIDER_KEYS = [chain.account(p.account).key.hex().removeprefix("0x") for p in gateways.PROVIDERS]


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


def _targets(service: dict[str, Any]) -> list[str]:
    return [v.split(":")[1] if isinstance(v, str) else v["target"] for v in service.get("volumes", [])]


def test_services_health_checks_and_wiring(config: dict[str, Any], env_values: Any) -> None:
    values, _ = env_values
    services = config["services"]
    assert set(services) == LONG_RUNNING | {"airflow-init"}
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["network_mode"] == "host", name
    for name in AIRFLOW:
        depends = services[name]["depends_on"]
        assert depends["devchain"]["condition"] == "service_healthy"
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["AIRFLOW_CONN_NVFL_STORAGE_DEFAULT"] == values["AIRFLOW_CONN_NVFL_STORAGE_DEFAULT"]
        assert values["POSTGRES_PASSWORD"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert values["REDIS_PASSWORD"] in env["AIRFLOW__CELERY__BROKER_URL"]
        assert env["NVFL_CONSUMER_POOL"] == compose.CONSUMER_POOL
    # Two workers as on two hosts: own names, own NVFL_HOME (own account file lock).
    names = {services[w]["environment"]["NVFL_WORKER_NAME"] for w in WORKERS}
    assert len(names) == 2 and all(services[w]["environment"]["NVFL_HOME"] == "/tmp/nvfl" for w in WORKERS)
    assert values["NVFL_CONSUMER_POOL"] == compose.CONSUMER_POOL
    assert "airflow pools set" in " ".join(services["airflow-init"]["command"])
    for image in ("POSTGRES_IMAGE", "REDIS_IMAGE", "SEAWEEDFS_IMAGE"):
        assert values[image] == services[image.removesuffix("_IMAGE").lower()]["image"]
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The workloads' engine: only the gateways get the socket (they start their providers' workloads).
    for name, service in services.items():
        assert ("/var/run/docker.sock" in _targets(service)) == (name in GATEWAYS), name


def _identities(values: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The S3 identities of ``.env`` by name: their keys and actions."""
    return {
        i["name"]: i["credentials"][0] | {"actions": i["actions"]}
        for i in json.loads(values["S3_IDENTITIES"])["identities"]
    }


def test_each_party_has_its_own_s3_identity_limited_to_the_bucket(env_values: Any) -> None:
    values, _ = env_values
    identities = _identities(values)
    assert set(identities) == {"consumer"} | {f"gateway-{p.name}" for p in gateways.PROVIDERS}
    assert len({i["secretKey"] for i in identities.values()}) == len(identities)
    for identity in identities.values():
        assert identity["actions"] == ["Read:nvfl", "Write:nvfl", "List:nvfl", "Tagging:nvfl"]


def test_each_gateway_has_its_own_key_and_a_valid_config(config: dict[str, Any], env_values: Any) -> None:
    values, _ = env_values
    services = config["services"]
    identities = _identities(values)
    for name, provider in GATEWAYS.items():
        service = services[name]
        assert service["command"] == ["python", "-m", "airflow_nevermined_fl.devtools.compose", "gateway"]
        assert service["depends_on"]["devchain"]["condition"] == "service_healthy"
        env = service["environment"]
        assert env["NVFL_GATEWAY_KEY"] == chain.account(provider.account).key.to_0x_hex()
        assert env["NVFL_GATEWAY_S3_SECRET_KEY"] == identities[f"gateway-{provider.name}"]["secretKey"]
        document = json.loads(env["NVFL_GATEWAY_CONFIG"])
        gateway = parse(document)  # what `nvfl gateway serve` accepts
        assert (gateway.name, gateway.host) == (provider.name, "127.0.0.1")
        assert gateway.rpc_url == "http://127.0.0.1:8545"
        assert str(gateway.deployment_file) == compose.DEPLOYMENT_FILE
        (offer,) = gateway.services
        assert (offer.type, offer.price) == (provider.type, provider.price)
        assert (offer.dataset or "").startswith("s3://nvfl/") == (provider.type == "fl-participant")
        assert gateway.backend == "docker"
        target = DockerTarget.from_extra(gateway.backend_connection["extra"], name)
        assert target.url == "unix:///var/run/docker.sock" and target.advertised_host == "127.0.0.1"
        assert not any(key in json.dumps(document) for key in PROVIDER_KEYS)  # the key is a separate secret
    configs = [json.loads(services[name]["environment"]["NVFL_GATEWAY_CONFIG"]) for name in GATEWAYS]
    assert len({c["listen"]["port"] for c in configs}) == len(GATEWAYS)


def test_no_provider_key_reaches_airflow(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        if name.startswith("airflow-"):
            env = json.dumps(service["environment"])
            assert not any(key in env for key in PROVIDER_KEYS), name
            conns = {k for k in service["environment"] if k.startswith("AIRFLOW_CONN_")}
            assert conns == {"AIRFLOW_CONN_NEVERMINED_CONSUMER", "AIRFLOW_CONN_NVFL_STORAGE_DEFAULT"}, name


def test_gateway_entry_writes_its_secret_files_and_drops_them_from_its_environment(
    env_values: Any, tmp_path: Path
) -> None:
    values, _ = env_values
    document = json.loads(values["NVFL_GATEWAY_PROVIDER_1_CONFIG"])
    document["key_file"] = str(tmp_path / "key")
    document["storage"]["credentials_file"] = str(tmp_path / "storage.json")
    environ = {
        "NVFL_GATEWAY_CONFIG": json.dumps(document),
        "NVFL_GATEWAY_KEY": values["NVFL_GATEWAY_PROVIDER_1_KEY"],
        "NVFL_GATEWAY_S3_ACCESS_KEY": values["NVFL_GATEWAY_PROVIDER_1_S3_ACCESS_KEY"],
        "NVFL_GATEWAY_S3_SECRET_KEY": values["NVFL_GATEWAY_PROVIDER_1_S3_SECRET_KEY"],
        "PATH": "/usr/bin",
    }
    path = compose.write_gateway_files(environ)
    assert set(environ) == {"NVFL_GATEWAY_CONFIG", "PATH"}
    gateway = parse(json.loads(path.read_text()))
    assert gateway.private_key() == values["NVFL_GATEWAY_PROVIDER_1_KEY"]
    assert gateway.storage.credentials() == {
        "access_key": values["NVFL_GATEWAY_PROVIDER_1_S3_ACCESS_KEY"],
        "secret_key": values["NVFL_GATEWAY_PROVIDER_1_S3_SECRET_KEY"],
    }
    assert {(tmp_path / f).stat().st_mode & 0o777 for f in ("key", "storage.json")} == {0o600}


def test_connections_parse_as_airflow_connections(env_values: Any) -> None:
    from airflow.sdk import Connection

    values, _ = env_values
    consumer = Connection.from_uri(values["AIRFLOW_CONN_NEVERMINED_CONSUMER"], conn_id="nevermined_consumer")
    assert consumer.conn_type == "nevermined" and consumer.host == "http://127.0.0.1:8545"
    assert consumer.extra_dejson["deployment_file"] == compose.DEPLOYMENT_FILE
    storage = Connection.from_uri(values["AIRFLOW_CONN_NVFL_STORAGE_DEFAULT"], conn_id="s")
    consumer_keys = _identities(values)["consumer"]
    assert (storage.login, storage.password) == (consumer_keys["accessKey"], consumer_keys["secretKey"])
    assert storage.extra_dejson == {"endpoint_url": "http://127.0.0.1:8333", "bucket": "nvfl"}


@pytest.mark.docker
def test_no_default_secrets_and_a_clear_error_without_env(env_values: Any, tmp_path: Path) -> None:
    values, _ = env_values
    text = COMPOSE_FILE.read_text()
    secret_keys = ("PASSWORD", "SECRET", "AIRFLOW_CONN_", "_KEY")
    assert not [k for k, v in values.items() if any(s in k for s in secret_keys) and v in text]
    empty = tmp_path / ".env"
    empty.write_text("")
    result = _compose_config(empty)
    assert result.returncode != 0
    assert "run nvfl compose env" in result.stderr


def test_fresh_secrets_each_time() -> None:
    first, second = compose.env(), compose.env()
    for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"):
        assert first[key] != second[key] and len(first[key]) >= 16
    assert first["S3_IDENTITIES"] != second["S3_IDENTITIES"]


def test_env_file_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    compose.write_env(path, compose.env(ports=compose.free_ports()))
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        compose.write_env(path, compose.env())
