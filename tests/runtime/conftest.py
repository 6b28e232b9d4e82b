"""Runtime fixtures: the FL venv, S3 access to the shared SeaweedFS (``seaweed``), demo shards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_nevermined_fl import runtime_env
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import s3

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def fl_python() -> Path:
    runtime_env.install()
    return runtime_env.runtime_python()


@pytest.fixture(scope="session")
def s3_env(seaweed: dict[str, Any]) -> dict[str, str]:
    """Environment of runtime processes: the generated keys and the endpoint."""
    return s3.env(seaweed)


@pytest.fixture(scope="session")
def s3_client(seaweed: dict[str, Any]) -> Any:
    return s3.client(seaweed)


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Digits, 3 providers, non-IID (Dirichlet 0.5), seed 0, 20 % held out."""
    return data.partition(tmp_path_factory.mktemp("shards"), 3, "non-iid", 0.5, 0.2, 0)


@pytest.fixture
def prefix() -> str:
    return f"t/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_config(seaweed: dict[str, Any], prefix: str) -> Callable[..., dict[str, Any]]:
    """Session config factory: softmax on digits, 3 participants, 0.5 s heartbeat, under ``prefix``."""

    def make(**overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "session_id": prefix.replace("/", "-"),
            "rounds": 3,
            "epochs": 3,
            "min_participants": 3,
            "fraction": 1.0,
            "heartbeat_period": 0.5,
            "heartbeat_timeout": 3,
            "stall_timeout": 30,
            "linger": 2,
            "storage": {"endpoint": seaweed["endpoint"], "bucket": seaweed["bucket"], "prefix": prefix},
            "model": {"name": "softmax", "num_features": 64, "num_classes": 10},
        }
        return {**config, **overrides}

    return make


@pytest.fixture
def list_keys(s3_client: Any) -> Callable[[str, str], list[str]]:
    """Keys in ``bucket`` under ``prefix``."""

    def keys(bucket: str, key_prefix: str) -> list[str]:
        response = s3_client.list_objects_v2(Bucket=bucket, Prefix=key_prefix)
        return [item["Key"] for item in response.get("Contents", [])]

    return keys
