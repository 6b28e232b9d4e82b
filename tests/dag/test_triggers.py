"""Coordinator triggers' decisions against a scripted gateway (pure logic; the DAG tests run the real
gateways and coordinator): finished, failed, crashed (exited or unreachable), stalled, timed out. The
scripted gateway checks every poll's signature as a real one does (``test_provider.py`` drives the
sensors against it)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_account import Account

from airflow_nevermined_fl import process
from airflow_nevermined_fl.contracts.keeper import HOOK_CONTRACTS
from airflow_nevermined_fl.protocol import API, auth
from airflow_nevermined_fl.triggers.coordinator import CoordinatorUrlTrigger, SessionRoundsTrigger

Script = Callable[[int], dict[str, Any]]
CONSUMER = Account.create()
AUDIENCE = Account.create().address
AGREEMENT = "0x" + "ab" * 32
CONN_ID = "nvfl_trigger_consumer"
CHAIN_ID = 31337


def run_inline(trigger: Any) -> dict[str, Any]:
    """The first event of ``trigger``, run in this process as the triggerer would."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError(f"{type(trigger).__name__} ended without an event")

    return asyncio.run(first())


@pytest.fixture(autouse=True)
def consumer_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    addresses = {name: Account.create().address for name in HOOK_CONTRACTS}  # never called: no chain here
    extra = {"chain_id": CHAIN_ID, "addresses": addresses}
    conn = {"conn_type": "nevermined", "password": CONSUMER.key.to_0x_hex(), "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


class GatewayServer:
    """Answers the execution status of ``AGREEMENT`` with ``script(n)`` for the n-th signed poll."""

    def __init__(self, script: Script) -> None:
        calls = {"n": 0}
        guard = auth.ReplayGuard()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path, audience = (
                    f"{API}/compute/status/{AGREEMENT}",
                    auth.Audience(CHAIN_ID, AUDIENCE, server.url),
                )
                signer = auth.verify(self.headers, "GET", self.path, "", audience, b"", guard, 60)
                assert self.path == path and signer == CONSUMER.address
                calls["n"] += 1
                body = json.dumps(script(calls["n"])).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="serve")
def serve_fixture() -> Iterator[Callable[[Script], GatewayServer]]:
    servers: list[GatewayServer] = []

    def start(script: Script) -> GatewayServer:
        servers.append(GatewayServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def running(coordinator: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """A gateway execution status around the coordinator's own status."""
    return {
        "state": "running",
        "exit_code": None,
        "coordinator_url": None,
        "coordinator": coordinator,
        **fields,
    }


def metrics(n: int) -> list[dict[str, Any]]:
    return [
        {
            "round": r,
            "loss": 1.0 / (r + 1),
            "accuracy": 0.5 + r / 10,
            "n_samples": 9,
            "global_accuracy": 0.4 + r / 10,
        }
        for r in range(n)
    ]


def gateway(url: str) -> dict[str, Any]:
    return {"endpoint": url, "audience": AUDIENCE, "agreement_id": AGREEMENT, "consumer_conn_id": CONN_ID}


def _rounds(url: str, **kwargs: Any) -> SessionRoundsTrigger:
    args = {
        "deadline": time.time() + 60,
        "stall_timeout": 5.0,
        "unreachable_timeout": 1.0,
        "poll_interval": 0.05,
    }
    return SessionRoundsTrigger(**gateway(url), **{**args, **kwargs})


def test_rounds_until_finished_logs_each_round(serve: Callable[[Script], GatewayServer], capsys: Any) -> None:
    def script(n: int) -> dict[str, Any]:
        done = min(n // 3, 2)
        state = "FINISHED" if n >= 9 else "ROUND"
        return running({"state": state, "round": done, "rounds_metrics": metrics(done)})

    server = serve(script)
    trigger = _rounds(server.url)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_nevermined_fl.triggers.coordinator.SessionRoundsTrigger"
    assert SessionRoundsTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert CONSUMER.key.hex().removeprefix("0x") not in json.dumps(kwargs)  # the trigger holds no secret
    event = run_inline(trigger)
    assert event["status"] == "success" and len(event["coordinator"]["rounds_metrics"]) == 2
    out = capsys.readouterr().out
    assert out.count("round 0 finished loss=1.0000 accuracy=0.5000 n_samples=9") == 1
    assert out.count("round 1 finished loss=0.5000 accuracy=0.6000 n_samples=9") == 1


@pytest.mark.parametrize(
    ("script", "kwargs", "message"),
    [
        (
            lambda n: running({"state": "FAILED", "reason": "stalled in STANDBY"}),
            {},
            "coordinator failed: stalled in STANDBY",
        ),
        (
            lambda n: (
                running({"state": "ROUND", "round": 0})
                if n < 3
                else running(None, state="failed", exit_code=137)
            ),
            {},
            "coordinator process exited with code 137 during the session",
        ),
        (
            lambda n: running({"state": "STANDBY", "round": 0}),
            {"stall_timeout": 0.5},
            "session stalled: no progress for 0.5s",
        ),
        (
            lambda n: running({"state": "ROUND", "round": n}),
            {"deadline": time.time() - 1},
            "session timeout",
        ),
        (lambda n: running(None), {}, "coordinator unreachable through"),
    ],
)
def test_rounds_fail_fast(
    serve: Callable[[Script], GatewayServer], script: Script, kwargs: dict[str, Any], message: str
) -> None:
    event = run_inline(_rounds(serve(script).url, **kwargs))
    assert event["status"] == "error" and event["message"].startswith(message), event


def test_rounds_detect_an_unreachable_gateway(serve: Callable[[Script], GatewayServer]) -> None:
    server = serve(lambda n: running({"state": "ROUND", "round": 0, "rounds_metrics": []}))
    threading.Timer(0.3, server.close).start()
    event = run_inline(_rounds(server.url, stall_timeout=30))
    assert event["status"] == "error" and "unreachable" in event["message"]


def test_url_trigger_serving_missing_and_exited(serve: Callable[[Script], GatewayServer]) -> None:
    announced = {"coordinator_url": "127.0.0.1:5000", "announcement": {"url": "127.0.0.1:5000"}}
    # serving once the gateway has both the URL and its signed announcement
    server = serve(
        lambda n: (
            running({"state": "STANDBY"}, **announced)
            if n > 3
            else running({"state": "STANDBY"}, coordinator_url="127.0.0.1:5000")
            if n > 1
            else running(None)
        )
    )
    event = run_inline(CoordinatorUrlTrigger(**gateway(server.url), timeout=5, poll_interval=0.05))
    assert event["status"] == "success" and event["execution"]["coordinator_url"] == "127.0.0.1:5000"

    url = f"http://127.0.0.1:{process.free_port()}"
    event = run_inline(CoordinatorUrlTrigger(**gateway(url), timeout=0.5, poll_interval=0.1))
    assert event == {
        "status": "error",
        "message": f"coordinator of agreement {AGREEMENT} not serving within 0.5s",
        "reason": "timeout",
    }

    exited = serve(lambda n: running(None, state="failed", exit_code=2))
    event = run_inline(CoordinatorUrlTrigger(**gateway(exited.url), timeout=30, poll_interval=0.1))
    assert event == {"status": "error", "message": "coordinator process exited with code 2 before serving"}
