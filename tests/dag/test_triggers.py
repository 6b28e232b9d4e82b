"""Coordinator triggers' decisions against a scripted status endpoint (pure logic; the DAG tests run the
real coordinator): finished, failed, crashed (unreachable or process gone), stalled, timed out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_nevermined_fl.devstack import process
from airflow_nevermined_fl.sensors.coordinator import run_inline
from airflow_nevermined_fl.triggers.coordinator import CoordinatorUrlTrigger, SessionRoundsTrigger

Script = Callable[[int], dict[str, Any]]


class StatusServer:
    """Answers ``/status`` and ``/health`` with ``script(n)`` for the n-th status request."""

    def __init__(self, script: Script) -> None:
        calls = {"n": 0}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/status":
                    calls["n"] += 1
                body = json.dumps(script(calls["n"]) if self.path == "/status" else {"ok": True}).encode()
                self.send_response(200)
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


@pytest.fixture
def serve() -> Iterator[Callable[[Script], StatusServer]]:
    servers: list[StatusServer] = []

    def start(script: Script) -> StatusServer:
        servers.append(StatusServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _metrics(n: int) -> list[dict[str, Any]]:
    return [{"round": r, "loss": 1.0 / (r + 1), "accuracy": 0.5 + r / 10, "n_samples": 9} for r in range(n)]


def _rounds(url: str, **kwargs: Any) -> SessionRoundsTrigger:
    args = {
        "deadline": time.time() + 60,
        "stall_timeout": 5.0,
        "unreachable_timeout": 1.0,
        "poll_interval": 0.05,
    }
    return SessionRoundsTrigger(status_url=url, **{**args, **kwargs})


def test_rounds_until_finished_logs_each_round(serve: Callable[[Script], StatusServer], capsys: Any) -> None:
    def script(n: int) -> dict[str, Any]:
        done = min(n // 3, 2)
        return {"state": "FINISHED" if n >= 9 else "ROUND", "round": done, "rounds_metrics": _metrics(done)}

    server = serve(script)
    trigger = _rounds(server.url)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_nevermined_fl.triggers.coordinator.SessionRoundsTrigger"
    assert SessionRoundsTrigger(**kwargs).serialize() == (classpath, kwargs)
    event = run_inline(trigger)
    assert event["status"] == "success" and len(event["coordinator"]["rounds_metrics"]) == 2
    out = capsys.readouterr().out
    assert out.count("round 0 finished loss=1.0000 accuracy=0.5000 n_samples=9") == 1
    assert out.count("round 1 finished loss=0.5000 accuracy=0.6000 n_samples=9") == 1


@pytest.mark.parametrize(
    ("script", "kwargs", "message"),
    [
        (
            lambda n: {"state": "FAILED", "reason": "stalled in STANDBY"},
            {},
            "coordinator failed: stalled in STANDBY",
        ),
        (
            lambda n: {"state": "STANDBY", "round": 0},
            {"stall_timeout": 0.5},
            "session stalled: no progress for 0.5s",
        ),
        (lambda n: {"state": "ROUND", "round": n}, {"deadline": time.time() - 1}, "session timeout"),
    ],
)
def test_rounds_fail_fast(
    serve: Callable[[Script], StatusServer], script: Script, kwargs: dict[str, Any], message: str
) -> None:
    event = run_inline(_rounds(serve(script).url, **kwargs))
    assert event["status"] == "error" and event["message"].startswith(message), event


def test_rounds_detect_a_crashed_coordinator(serve: Callable[[Script], StatusServer]) -> None:
    server = serve(lambda n: {"state": "ROUND", "round": 0, "rounds_metrics": []})
    threading.Timer(0.3, server.close).start()
    event = run_inline(_rounds(server.url, stall_timeout=30))
    assert event["status"] == "error" and "unreachable" in event["message"]


def test_url_trigger_healthy_missing_and_exited(serve: Callable[[Script], StatusServer]) -> None:
    server = serve(lambda n: {"state": "STANDBY"})
    assert run_inline(CoordinatorUrlTrigger(server.url, timeout=5))["status"] == "success"
    url = f"http://127.0.0.1:{process.free_port()}"
    event = run_inline(CoordinatorUrlTrigger(url, timeout=0.5, poll_interval=0.1))
    assert event == {
        "status": "error",
        "message": f"coordinator at {url} not healthy within 0.5s",
        "reason": "timeout",
    }

    from airflow_nevermined_fl.launchers import Labels, WorkloadSpec
    from airflow_nevermined_fl.launchers.local import LocalLauncher

    launcher = LocalLauncher()
    labels = Labels(dag_id="trigger_test", run_id="r", task_id="t", role="coordinator", name="c")
    workload = launcher.start(WorkloadSpec(labels=labels, module="json.tool", args=["{workdir}/none.json"]))
    while launcher.status(workload).running:
        time.sleep(0.05)
    event = run_inline(CoordinatorUrlTrigger(url, timeout=30, poll_interval=0.1, workload=workload.to_dict()))
    assert event == {"status": "error", "message": "coordinator process exited with code 2 before serving"}
