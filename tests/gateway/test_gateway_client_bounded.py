"""Bounded gateway calls: a gateway that refuses, never answers, or answers something that is not JSON is
a ``GatewayError`` naming the gateway and the call, within the client's timeout (generous slack: the bound
is what matters, not the speed)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from stalled_servers import HANG, ScriptedHttpServer, SilentServer, closed_url, elapsed

from airflow_nevermined_fl.protocol import API
from airflow_nevermined_fl.protocol.client import TIMEOUT, GatewayClient, GatewayError

SLACK = 10.0
AUDIENCE = "0x" + "11" * 20
SHORT = httpx.Timeout(1.0, connect=1.0)


def test_default_timeout_bounds_every_phase() -> None:
    assert GatewayClient("http://x", AUDIENCE)._timeout is TIMEOUT
    assert all(0 < t <= 60 for t in (TIMEOUT.connect, TIMEOUT.read, TIMEOUT.write, TIMEOUT.pool))


def test_closed_port_is_an_unreachable_gateway_naming_the_call() -> None:
    url = closed_url()
    start = time.monotonic()
    with pytest.raises(GatewayError) as info:
        GatewayClient(url, AUDIENCE, timeout=SHORT).info()
    assert elapsed(start) < 1.0 + SLACK
    assert info.value.status_code is None and info.value.endpoint == url
    assert str(info.value).startswith(f"gateway {url}: GET {API}/info: unreachable: ConnectError")


def test_silent_gateway_times_out_sync_async_and_following_logs() -> None:
    with SilentServer() as silent:
        client = GatewayClient(silent.url, AUDIENCE, timeout=SHORT)
        start = time.monotonic()
        with pytest.raises(GatewayError) as info:
            client.status("0xabc")
        assert 1.0 <= elapsed(start) < 1.0 + SLACK
        assert info.value.status_code is None
        assert str(info.value) == (
            f"gateway {silent.url}: GET {API}/compute/status/0xabc: unreachable: no answer within 1 s:"
            " ReadTimeout: timed out"
        )

        start = time.monotonic()
        with pytest.raises(
            GatewayError, match=r"GET .*/compute/status/0xabc: unreachable: no answer within 1 s"
        ):
            asyncio.run(client.astatus("0xabc"))
        assert elapsed(start) < 1.0 + SLACK

        start = time.monotonic()
        with pytest.raises(GatewayError, match=r"logs/0xabc\?follow=true: unreachable: no answer within 1 s"):
            list(client.follow_logs("0xabc", idle_timeout=1.0))
        assert elapsed(start) < 1.0 + SLACK

        async def follow() -> list[str]:  # the triggerer's way
            return [line async for line in client.afollow_logs("0xabc", idle_timeout=1.0)]

        start = time.monotonic()
        with pytest.raises(GatewayError, match=r"logs/0xabc\?follow=true: unreachable: no answer within 1 s"):
            asyncio.run(follow())
        assert elapsed(start) < 1.0 + SLACK


def test_hanging_http_server_and_non_json_answers() -> None:
    def route(handler, body):  # noqa: ANN001, ANN202 - http.server callback
        if handler.path.endswith("/info"):
            return 200, "text/html", b"<html>a proxy's page</html>"
        return HANG

    with ScriptedHttpServer(route) as server:
        client = GatewayClient(server.url, AUDIENCE, timeout=SHORT)
        with pytest.raises(GatewayError) as info:
            client.info()
        assert info.value.status_code == 200
        assert str(info.value) == f"gateway {server.url}: HTTP 200: GET {API}/info: the answer is not JSON"
        start = time.monotonic()
        with pytest.raises(GatewayError, match=r"POST .*/compute/stop/0xabc: unreachable: no answer within"):
            client.stop("0xabc")
        assert elapsed(start) < 1.0 + SLACK
