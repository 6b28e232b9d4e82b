"""The status channel between a gateway and its own coordinator: TLS, pinned to the session certificate.

The gateway settles (releases its escrow, tells the consumer the model URL and checksum) on what its
coordinator's ``/status`` says. A real coordinator launched through ``execute`` is read over TLS; once it is
gone, a spoofer answering on its status port "FINISHED, with a model" (in plaintext, or over TLS with a
certificate of its own for the session's name) is not believed: the execution fails, nothing is settled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gatewaystack import Consumer, Gateway, wait_for

from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.gateway.channel import key_pair
from airflow_nevermined_fl.gateway.launchers import Workload

SPOOFED = {
    "state": "FINISHED",
    "round": 1,
    "rounds": 1,
    "rounds_completed": 1,
    "rounds_metrics": [],
    "model": {"url": "s3://attacker/model/final.npz", "sha256": "0" * 64, "metadata_url": "s3://attacker/m"},
}


class Spoofer(ThreadingHTTPServer):
    """Answers ``SPOOFED`` to any GET, in plaintext or (a first byte of a TLS handshake) over TLS with its
    own certificate; counts the connections of each kind."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps(SPOOFED).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.tls, self.hits = tls, Counter[str]()
        super().__init__(address, Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, peer = super().get_request()
        sock.settimeout(5)
        if sock.recv(1, socket.MSG_PEEK) == b"\x16":
            self.hits["tls"] += 1
            return self.tls.wrap_socket(sock, server_side=True), peer
        self.hits["plaintext"] += 1
        return sock, peer


@contextmanager
def spoofer_on(host: str, port: int, tmp_path: Path) -> Iterator[Spoofer]:
    """A spoofer bound to ``host:port`` as soon as the port is free."""
    forged = key_pair("impostor", 600)
    (tmp_path / "forged.crt").write_text(forged.cert_pem)
    (tmp_path / "forged.key").write_text(forged.key_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "forged.crt", tmp_path / "forged.key")
    deadline = time.monotonic() + 10
    while True:
        try:
            server = Spoofer((host, port), tls)
            break
        except OSError:
            assert time.monotonic() < deadline, f"{host}:{port} not free"
            time.sleep(0.001)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_spoofed_status_is_not_believed(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
    tmp_path: Path,
) -> None:
    seats = [data_gw.asset("provider-1")["did"]]
    workflow = consumer.coordinator_workflow(coordinator_gw, session_id, data.softmax_model(manifest), seats)
    agreement = consumer.agreement(coordinator_gw, "coordinator")
    agreement_id, client = agreement["agreement_id"], consumer.client(coordinator_gw)
    client.execute(agreement, workflow)
    # The gateway reads its coordinator over TLS, pinned to the certificate it generated for the session.
    status = wait_for(lambda: (s := client.status(agreement_id))["coordinator"] and s, 60, "coordinator up")
    assert status["coordinator"]["state"] == "STANDBY" and status["coordinator"]["session_id"] == session_id

    (directory,) = coordinator_gw.workload_dirs(agreement_id)
    workload = Workload.from_dict(json.loads((directory / "workload.json").read_text()))
    host, port = workload.endpoints["status"].split(":")
    # The coordinator is gone; someone else answers on its status port.
    os.killpg(int(workload.details["pid"]), signal.SIGKILL)
    with spoofer_on(host, int(port), tmp_path) as spoofer:
        ended = wait_for(
            lambda: (s := client.status(agreement_id))["state"] != "running" and s, 30, "execution ended"
        )
        assert sum(spoofer.hits.values()) >= 1  # the gateway asked the spoofer, and did not believe it
    assert ended["state"] == "failed", ended
    assert ended["coordinator"]["state"] == "STANDBY"  # the last status from the real coordinator
    assert ended["settlement"] == {"compute_tx": None, "release_tx": None, "settled": False, "error": None}
