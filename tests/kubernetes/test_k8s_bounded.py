"""Bounded Kubernetes API calls: every call carries ``_request_timeout`` (``extra.nvfl.request_timeout``);
an API server that refuses or never answers is a ``KubernetesUnreachableError`` naming the connection, the
server and the call, within its bound (urllib3's own bounded retries included; generous slack: a
correctness bound, not a speed test). The server's own answers stay ``ApiException`` (404 = gone)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apiserver import FakeApiServer
from k8s_specs import coordinator_spec
from stalled_servers import SilentServer, closed_url, elapsed

from airflow_nevermined_fl.gateway.launchers import get_launcher
from airflow_nevermined_fl.gateway.launchers.k8s_config import KubernetesConfigError, parse
from airflow_nevermined_fl.gateway.launchers.kubernetes import KubernetesUnreachableError

SLACK = 10.0
URLLIB3_ATTEMPTS = 4  # the client's pool: 1 try + urllib3's default 3 retries


def kubeconfig(path: Path, server: str) -> str:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return str(path)


def test_request_timeout_default_and_checked() -> None:
    assert parse("c", {}).request_timeout == 60.0
    assert parse("c", {"nvfl": {"request_timeout": 2.5}}).request_timeout == 2.5
    with pytest.raises(KubernetesConfigError, match=r"extra\.nvfl\.request_timeout: 0 is less than or equal"):
        parse("c", {"nvfl": {"request_timeout": 0}})


def test_every_call_carries_the_timeout(api: FakeApiServer, conn: Callable[..., str]) -> None:
    launcher = get_launcher("kubernetes", conn(request_timeout=7))
    seen: list[object] = []
    rest = launcher.api.api_client.rest_client
    request = rest.request

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("_request_timeout"))
        return request(*args, **kwargs)

    rest.request = recording
    workload = launcher.start(coordinator_spec(ports={"grpc": 1, "status": 2}))
    launcher.status(workload)
    launcher.logs(workload)
    launcher.stop(workload)
    assert seen and set(seen) == {7}


def test_closed_api_server_is_unreachable(tmp_path: Path, k8s_conn: Callable[..., str]) -> None:
    url = closed_url()
    conn_id = k8s_conn(kube_config_path=kubeconfig(tmp_path / "kc.json", url), nvfl={"request_timeout": 1})
    start = time.monotonic()
    with pytest.raises(KubernetesUnreachableError) as info:
        get_launcher("kubernetes", conn_id).find("dag", "run")
    assert elapsed(start) < SLACK
    assert str(info.value) == (
        f"kubernetes connection {conn_id!r} (API server {url}): unreachable during list_namespaced_pod:"
        " NewConnectionError"
    )


def test_silent_api_server_times_out_within_the_retries(tmp_path: Path, k8s_conn: Callable[..., str]) -> None:
    with SilentServer() as silent:
        path = kubeconfig(tmp_path / "kc.json", silent.url)
        conn_id = k8s_conn(kube_config_path=path, nvfl={"request_timeout": 1})
        launcher = get_launcher("kubernetes", conn_id)
        start = time.monotonic()
        with pytest.raises(KubernetesUnreachableError) as info:
            launcher.find("dag", "run")
        took = elapsed(start)
    assert 1.0 <= took < URLLIB3_ATTEMPTS * 1.0 + SLACK
    assert str(info.value) == (
        f"kubernetes connection {conn_id!r} (API server {silent.url}): no answer within 1 s during"
        " list_namespaced_pod: ReadTimeoutError"
    )
