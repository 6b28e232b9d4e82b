"""Runtime fixtures: the FL venv, S3 access to the shared SeaweedFS (``seaweed``), demo shards, and secure
session configs (:class:`SessionChannel`: TLS key pair, seat tickets, storage grants)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_nevermined_fl import runtime_env
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import s3
from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.runtime.config import ModelSpec, StorageSpec
from airflow_nevermined_fl.runtime.storage import upload_limit

HERE = Path(__file__).resolve().parent
UPLOAD_BYTES = upload_limit(ModelSpec("softmax", 64, 10))  # the configs' model


@pytest.fixture(scope="session")
def fl_python() -> Path:
    runtime_env.install()
    return runtime_env.runtime_python()


@pytest.fixture(scope="session")
def s3_env(seaweed: dict[str, Any]) -> dict[str, str]:
    """Environment of a ``stock_sdk`` coordinator and of stock SDK clients: the keys, the endpoint."""
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
def session_id(prefix: str) -> str:
    return prefix.replace("/", "-")


@pytest.fixture
def storage(seaweed: dict[str, Any], prefix: str) -> StorageSpec:
    return StorageSpec(seaweed["bucket"], prefix, seaweed["endpoint"])


@pytest.fixture
def make_channel(
    s3_client: Any, storage: StorageSpec, session_id: str, shards: dict[str, Any]
) -> Callable[..., SessionChannel]:
    """A session channel (fresh provider keys, TLS pair, grants on ``storage``) with one seat per shard,
    each declaring the shard's real row count; ``initial_model``: also a grant to read it."""

    def make(initial_model: str | None = None) -> SessionChannel:
        rows = [provider["rows"] for provider in shards["providers"]]
        return SessionChannel.create(s3_client, storage, session_id, rows, initial_model, UPLOAD_BYTES)

    return make


@pytest.fixture
def channel(make_channel: Callable[..., SessionChannel]) -> SessionChannel:
    """The channel of :func:`make_config`'s sessions: seat ``i`` for ``shards["providers"][i]``."""
    return make_channel()


@pytest.fixture
def make_config(
    seaweed: dict[str, Any], prefix: str, session_id: str, channel: SessionChannel
) -> Callable[..., dict[str, Any]]:
    """Session config factory: softmax on digits, 3 participants, 0.5 s heartbeat, under ``prefix``, on the
    secure ``channel`` (without one when ``stock_sdk=True`` is among the overrides)."""

    def make(**overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "session_id": session_id,
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
        if not overrides.get("stock_sdk"):
            config["channel"] = channel.spec.to_dict()
        return {**config, **overrides}

    return make


@pytest.fixture
def list_keys(s3_client: Any) -> Callable[[str, str], list[str]]:
    """Keys in ``bucket`` under ``prefix``."""

    def keys(bucket: str, key_prefix: str) -> list[str]:
        response = s3_client.list_objects_v2(Bucket=bucket, Prefix=key_prefix)
        return [item["Key"] for item in response.get("Contents", [])]

    return keys
