"""The rounds trigger loses no workload's log lines when the session ends before their streams caught up
(the ``test_session_over_rest`` flake on a loaded machine): each stream is left to send its rest, within a
bound, before the trigger fires. Against a scripted gateway that checks each request's signature."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from test_triggers import (  # noqa: F401  (consumer_connection: autouse fixture)
    AGREEMENT,
    AUDIENCE,
    CHAIN_ID,
    CONN_ID,
    CONSUMER,
    consumer_connection,
    metrics,
    run_inline,
    running,
)

from airflow_nevermined_fl.protocol import API, auth
from airflow_nevermined_fl.triggers.coordinator import SessionRoundsTrigger

LINES, PERIOD = 8, 0.25


class LaggingGateway:
    """Status: FINISHED at the first poll. Logs (``follow=true``): ``LINES`` lines, one per ``PERIOD`` s."""

    def __init__(self) -> None:
        guard, gateway = auth.ReplayGuard(), self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                audience = auth.Audience(CHAIN_ID, AUDIENCE, gateway.url)
                signer = auth.verify(self.headers, "GET", parts.path, parts.query, audience, b"", guard, 60)
                assert signer == CONSUMER.address
                if parts.path == f"{API}/compute/status/{AGREEMENT}":
                    finished = {"state": "FINISHED", "round": 1, "rounds_metrics": metrics(1)}
                    self._answer("application/json", running(finished))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for i in range(LINES):
                    time.sleep(PERIOD)
                    self.wfile.write(f"line {i}\n".encode())
                    self.wfile.flush()

            def _answer(self, kind: str, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def lagging() -> Iterator[LaggingGateway]:
    gateway = LaggingGateway()
    yield gateway
    gateway.server.shutdown()
    gateway.server.server_close()


def test_every_workload_line_reaches_the_task_log(lagging: LaggingGateway, capsys: Any) -> None:
    workloads = [
        {
            "name": f"provider-{n}",
            "endpoint": lagging.url,
            "provider": AUDIENCE,
            "agreement_id": f"0x{n:064x}",
        }
        for n in (1, 2)  # participants: their streams are awaited (the coordinator's, AGREEMENT, is not)
    ]
    trigger = SessionRoundsTrigger(
        lagging.url,
        AUDIENCE,
        AGREEMENT,
        CONN_ID,
        deadline=time.time() + 60,
        stall_timeout=30,
        unreachable_timeout=10,
        workloads=workloads,
        poll_interval=0.05,
    )
    assert run_inline(trigger)["status"] == "success"
    out = capsys.readouterr().out
    for name in ("provider-1", "provider-2"):
        assert [f"[{name}] line {i}" in out for i in range(LINES)] == [True] * LINES, name
