"""Bounded calls to the gateways' and the consumer's other dependencies: S3 (boto3 with connect/read
timeouts and bounded retries) and the Docker engine (the SDK's timeout). A lost dependency is the project's
own error naming it and the call, within its bound (generous slack: a correctness bound, not a speed
test); an S3 error answer keeps its code."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from stalled_servers import HANG, ScriptedHttpServer, SilentServer, closed_url, elapsed

from airflow_nevermined_fl import objectstore
from airflow_nevermined_fl.gateway.launchers.docker import (
    ENGINE_TIMEOUT,
    DockerConfigError,
    DockerEngineError,
    DockerLauncher,
    DockerTarget,
)
from airflow_nevermined_fl.hooks.storage import StorageHook
from airflow_nevermined_fl.objectstore import StorageError, StorageUnreachableError

SLACK = 10.0
S3_BACKOFF = 1 + 2 + 4  # botocore's standard retry mode: at most 2**n s before retry n (jittered)


def storage(monkeypatch: pytest.MonkeyPatch, endpoint: str, **extra: Any) -> StorageHook:
    conn_id = f"nvfl_storage_{uuid.uuid4().hex[:8]}"
    uri = json.dumps(
        {
            "conn_type": "nvfl_storage",
            "login": extra.pop("login", "key"),
            "password": extra.pop("password", "secret"),
            "extra": {"endpoint_url": endpoint, "bucket": "nvfl", **extra},
        }
    )
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
    return StorageHook(conn_id)


def test_s3_client_defaults_are_bounded() -> None:
    config = objectstore.client("http://127.0.0.1:1", "us-east-1", "k", "s").meta.config
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    assert config.retries["total_max_attempts"] == 1 + objectstore.MAX_ATTEMPTS


def test_s3_closed_port_is_unreachable_within_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_url()
    hook = storage(monkeypatch, url, connect_timeout=1, read_timeout=1)
    start = time.monotonic()
    with pytest.raises(StorageUnreachableError) as info:
        hook.get_bytes("s3://nvfl/some/key")
    assert elapsed(start) < (1 + objectstore.MAX_ATTEMPTS) * 1.0 + S3_BACKOFF + SLACK
    assert str(info.value) == (
        f"S3 {url}: unreachable while reading s3://nvfl/some/key: EndpointConnectionError"
        f" (retried up to {objectstore.MAX_ATTEMPTS} times)"
    )
    assert "secret" not in str(info.value)


def test_s3_silent_endpoint_times_out_within_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    with SilentServer() as silent:
        hook = storage(monkeypatch, silent.url, connect_timeout=1, read_timeout=1)
        start = time.monotonic()
        with pytest.raises(
            StorageUnreachableError, match=r"unreachable while writing s3://nvfl/k: ReadTimeout"
        ):
            hook.put_bytes("k", b"data")
        took = elapsed(start)
    # one attempt and MAX_ATTEMPTS retries, each bounded by the read timeout, plus backoff
    assert 1.0 <= took < (1 + objectstore.MAX_ATTEMPTS) * 1.0 + S3_BACKOFF + SLACK


def test_s3_error_answers_keep_their_code(seaweed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    hook = storage(
        monkeypatch,
        seaweed["endpoint"],
        login=seaweed["access_key"],
        password=seaweed["secret_key"],
        connect_timeout=2,
        read_timeout=5,
    )
    key = f"bounded/{uuid.uuid4().hex}"
    assert not hook.exists(hook.url(key))
    with pytest.raises(StorageError) as info:
        hook.get_bytes(hook.url(key))
    assert info.value.code == "NoSuchKey" and not isinstance(info.value, StorageUnreachableError)
    assert str(info.value).startswith(f"S3 {seaweed['endpoint']}: reading {hook.url(key)}: NoSuchKey")
    assert hook.get_bytes(hook.put_bytes(key, b"kept")) == b"kept"


@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_s3_timeouts_from_the_connection_are_checked(monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    with pytest.raises(ValueError, match=r"extra.read_timeout: expected a positive number of seconds"):
        storage(monkeypatch, "http://127.0.0.1:1", read_timeout=value).client  # noqa: B018


def docker_launcher(url: str, timeout: float) -> DockerLauncher:
    launcher = DockerLauncher()
    launcher.__dict__["target"] = DockerTarget.from_extra({"docker_url": url, "timeout": timeout}, "c")
    return launcher


def test_docker_timeout_default_and_checked() -> None:
    assert DockerTarget.from_extra({}, "c").timeout == ENGINE_TIMEOUT == 60
    with pytest.raises(DockerConfigError, match=r"c\.extra\.timeout: expected a positive number of seconds"):
        DockerTarget.from_extra({"timeout": 0}, "c")


def test_docker_engine_closed_or_silent_is_a_clear_error_within_the_timeout() -> None:
    url = closed_url("tcp")
    with pytest.raises(DockerEngineError, match=rf"docker engine {url}: unreachable while connecting"):
        docker_launcher(url, 1.0).find("dag", "run")
    with SilentServer() as silent:
        url = silent.url.replace("http://", "tcp://")
        start = time.monotonic()
        with pytest.raises(DockerEngineError, match=rf"docker engine {url}: unreachable while connecting"):
            docker_launcher(url, 1.0).find("dag", "run")
        assert elapsed(start) < 1.0 + SLACK


def test_docker_engine_that_stops_answering_mid_way() -> None:
    def route(handler, body):  # noqa: ANN001, ANN202 - http.server callback
        if handler.path == "/version":
            return 200, "application/json", json.dumps({"ApiVersion": "1.43", "Version": "24.0.0"}).encode()
        if handler.path.endswith("/_ping"):
            return 200, "text/plain", b"OK"
        return HANG  # every container call

    with ScriptedHttpServer(route) as engine:
        url = engine.url.replace("http://", "tcp://")
        launcher = docker_launcher(url, 1.0)
        start = time.monotonic()
        with pytest.raises(DockerEngineError) as info:
            launcher.find("dag", "run")
        assert 1.0 <= elapsed(start) < 1.0 + SLACK
    assert str(info.value) == f"docker engine {url}: no answer within 1 s to containers: ReadTimeout"
