"""A gateway under hostile HTTP traffic (issue 20): anyone on the network may send anything, a consumer may
replay or redirect its own signatures, a consumer's DDO URL may drip. Each test is the attack, against a
real gateway process (its own, so its rate limits and restarts disturb no other test)."""

from __future__ import annotations

import json
import secrets
import select
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from gatewaystack import NVFL, Consumer, Gateway, start_gateway, stop_gateway

from airflow_nevermined_fl import process
from airflow_nevermined_fl.contracts.client import Signer, connect
from airflow_nevermined_fl.contracts.deployment import load_deployment, mint
from airflow_nevermined_fl.contracts.keeper import HOOK_CONTRACTS, Keeper, KeeperSettings
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.gateway import config as gateway_config
from airflow_nevermined_fl.gateway.app import MAX_FOLLOWS
from airflow_nevermined_fl.gateway.checks import Refusal
from airflow_nevermined_fl.gateway.launchers.base import Labels, Workload
from airflow_nevermined_fl.gateway.launchers.local import _proc_start_time
from airflow_nevermined_fl.gateway.limits import MAX_BODY
from airflow_nevermined_fl.gateway.records import Records
from airflow_nevermined_fl.gateway.resources import FetchError, Provider
from airflow_nevermined_fl.protocol import API, auth
from airflow_nevermined_fl.protocol.client import GatewayError

GB = 1 << 30
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def own_gw(
    tmp_path_factory: pytest.TempPathFactory, gw_chain: dict[str, Any], seaweed: dict[str, Any]
) -> Iterator[Gateway]:
    services = [{"name": "hostile-coordinator", "type": "fl-coordinator", "price": 3}]
    directory = tmp_path_factory.mktemp("gw-hostile")
    gateway = start_gateway(directory, "hostile", chain.DATA_PROVIDERS[2], gw_chain, seaweed, services)
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


def restart(gateway: Gateway) -> None:
    """Stop the gateway's process and serve the same config (same state dir) again."""
    process.stop(gateway.pid)
    port = urlsplit(gateway.endpoint).port
    assert port is not None
    argv = [str(NVFL), "gateway", "serve", "--config", str(gateway.config_file)]
    gateway.pid = process.start(argv, gateway.directory / "gateway.log")
    process.wait_port("127.0.0.1", port, timeout=60, pid=gateway.pid, what="restarted gateway")


def rss(pid: int) -> int:
    """Resident memory of ``pid`` (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """The highest resident memory of ``pid`` while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def zeros(total: int) -> Iterator[bytes]:
    """``total`` bytes of body, one chunk at a time (the test itself never holds them)."""
    block = bytes(CHUNK)
    for _ in range(total // CHUNK):
        yield block


def push(
    endpoint: str, path: str, headers: dict[str, str], chunks: Iterable[bytes], length: int | None
) -> tuple[int, int]:
    """POST a body from ``chunks`` (``length``: its Content-Length; None: chunked) until the gateway
    answers; the answer's status and how many body bytes were sent before it."""
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    framing = {"Content-Length": str(length)} if length is not None else {"Transfer-Encoding": "chunked"}
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in {**headers, **framing}.items()) + "\r\n"
    sent = 0
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        for chunk in chunks:
            frame = chunk if length is not None else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            view = memoryview(frame)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], 30)
                if readable:
                    return _status(sock), sent
                assert writable, "the gateway neither reads nor answers"
                try:
                    n = sock.send(view)
                except BlockingIOError:
                    continue
                except OSError:
                    return _status(sock), sent
                view, sent = view[n:], sent + n
        if length is None:
            sock.setblocking(True)
            sock.sendall(b"0\r\n\r\n")
        return _status(sock), sent


def _status(sock: socket.socket) -> int:
    sock.setblocking(True)
    sock.settimeout(30)
    answer = b""
    while b"\r\n" not in answer:
        data = sock.recv(4096)
        assert data, f"connection closed without an answer (got {answer!r})"
        answer += data
    return int(answer.split()[1])


def test_gigabyte_unsigned_body_refused_before_it_is_read(own_gw: Gateway) -> None:
    """A 1 GB body without signature headers: 401 on the headers alone, whether its length is declared
    or it is chunked, and the gateway's resident memory does not follow the body."""
    path = f"{API}/compute/execute/0x{'ab' * 32}"
    with PeakRss(own_gw.pid) as memory:
        before = memory.peak
        declared = push(own_gw.endpoint, path, {"Content-Type": "application/json"}, zeros(GB), GB)
        chunked = push(own_gw.endpoint, path, {"Content-Type": "application/json"}, zeros(GB), None)
    assert (declared[0], chunked[0]) == (401, 401)
    assert declared[1] < GB and chunked[1] < GB
    assert memory.peak - before < 20 * 1024 * 1024, f"gateway RSS grew by {(memory.peak - before) >> 20} MiB"


def test_oversized_bodies_are_413(own_gw: Gateway, consumer: Consumer) -> None:
    """Past the cap, a body is 413: at once on its Content-Length, or once a chunked one passes it (with
    signature headers present: the size is refused before the signature is even checked)."""
    path = f"{API}/compute/execute/0x{'cd' * 32}"
    body = bytes(1 << 20)
    headers = auth.signed_headers(
        consumer.keeper.sign_message, consumer.address, "POST", path, consumer.audience(own_gw), body
    )
    assert push(own_gw.endpoint, path, headers, [body], len(body))[0] == 413
    status, sent = push(own_gw.endpoint, path, headers, zeros(GB), None)
    assert status == 413 and MAX_BODY <= sent < GB


def test_slow_drip_body_is_cut_off(own_gw: Gateway) -> None:
    """A body dripping one byte a second (signature headers present, so the headers pass) holds its
    connection no longer than the body deadline: 408."""

    def drip() -> Iterator[bytes]:
        for _ in range(60):
            time.sleep(1.0)
            yield b"{"

    fake = dict.fromkeys(auth.HEADERS, "x")
    status, sent = push(own_gw.endpoint, f"{API}/compute/execute/0x{'ef' * 32}", fake, drip(), 1000)
    assert status == 408 and sent < 60


def _status_request(consumer: Consumer, gateway: Gateway, audience: auth.Audience) -> httpx.Response:
    path = f"{API}/compute/status/0x{secrets.token_hex(32)}"
    headers = auth.signed_headers(consumer.keeper.sign_message, consumer.address, "GET", path, audience)
    return consumer.raw(gateway, "GET", path, b"", headers)


def test_signature_bound_to_chain_gateway_url_and_query(own_gw: Gateway, consumer: Consumer) -> None:
    """A signature made for another chain, another URL of the gateway, or another query is refused; the
    same request signed for this gateway passes authentication (404: no such execution)."""
    mine = consumer.audience(own_gw)
    assert _status_request(consumer, own_gw, mine).status_code == 404
    port = urlsplit(own_gw.endpoint).port
    for audience in (
        auth.Audience(mine.chain_id + 1, mine.address, mine.url),
        auth.Audience(mine.chain_id, mine.address, f"http://localhost:{port}"),
        auth.Audience(mine.chain_id, mine.address, "https://gateway.example.org"),
    ):
        answer = _status_request(consumer, own_gw, audience)
        assert answer.status_code == 401 and "invalid signature" in answer.json()["detail"], audience
    path = f"{API}/compute/logs/0x{secrets.token_hex(32)}"
    headers = auth.signed_headers(
        consumer.keeper.sign_message, consumer.address, "GET", path, mine, query="tail=5"
    )
    answer = consumer.raw(own_gw, "GET", f"{path}?tail=10000", b"", headers)
    assert answer.status_code == 401 and "invalid signature" in answer.json()["detail"]
    answer = consumer.raw(own_gw, "GET", f"{path}?tail=5", b"", headers)
    assert answer.status_code == 404  # the signed query: authenticated


def test_replay_refused_after_a_restart(own_gw: Gateway, consumer: Consumer) -> None:
    path = f"{API}/compute/status/0x{secrets.token_hex(32)}"
    headers = auth.signed_headers(
        consumer.keeper.sign_message, consumer.address, "GET", path, consumer.audience(own_gw)
    )
    assert consumer.raw(own_gw, "GET", path, b"", headers).status_code == 404
    restart(own_gw)
    again = consumer.raw(own_gw, "GET", path, b"", headers)
    assert again.status_code == 401 and "replayed request" in again.json()["detail"]


def test_info_flood_is_rate_limited(own_gw: Gateway) -> None:
    """A flood of the public ``info`` from one address meets 429 once its burst is spent (and the DDOs,
    another endpoint's budget, are still served)."""
    codes: list[int] = []
    with httpx.Client(base_url=own_gw.endpoint) as http:
        while 429 not in codes and len(codes) < 3000:
            codes.append(http.get(f"{API}/info").status_code)
        assert set(codes) == {200, 429}
        did = own_gw.assets[0]["did"]
        assert http.get(f"{API}/ddo/{did}").status_code == 200


# -- log follows -------------------------------------------------------------------------------------------


def fake_execution(gateway: Gateway, consumer: Consumer, script: str) -> tuple[str, int]:
    """An execution record of ``consumer`` on ``gateway`` whose workload (a local process the way the
    local launcher starts one) runs ``script``; the agreement id and the pid."""
    agreement_id = "0x" + secrets.token_hex(32)
    directory = gateway.state_dir / "workloads" / "hostile-test" / agreement_id[:12]
    directory.mkdir(parents=True)
    argv = shlex.join([sys.executable, "-u", "-c", script])
    wrapper = ["/bin/sh", "-c", f'{argv}; echo $? > "$0"', str(directory / "exit_code")]
    pid = process.start(wrapper, directory / "output.log", cwd=directory)
    workload = Workload(
        backend="local",
        id=str(pid),
        labels=Labels("gw-hostile", agreement_id, "participant", "participant", "hostile"),
        host="127.0.0.1",
        started=time.time(),
        details={
            "pid": pid,
            "proc_start": _proc_start_time(pid),
            "dir": str(directory),
            "log": str(directory / "output.log"),
        },
    )
    record = {
        "agreement_id": agreement_id,
        "service": "hostile-coordinator",
        "role": "participant",
        "did": "did:nv:" + "00" * 32,
        "workflow_did": "did:nv:" + "11" * 32,
        "consumer": consumer.address,
        "session_id": "hostile",
        "started": workload.started,
        "agreement": {},
        "workload": workload.to_dict(),
    }
    (gateway.state_dir / "executions").mkdir(exist_ok=True)
    (gateway.state_dir / "executions" / f"{agreement_id}.json").write_text(json.dumps(record))
    return agreement_id, pid


LINES = 20_000
EVENT = "2026-01-01 00:00:00,000 INFO __main__: event='{}' n={}"
"""A runtime event line: what a participant's policy (by default) lets its consumer see."""


def test_follow_sends_every_line_once(own_gw: Gateway, consumer: Consumer) -> None:
    """A workload that writes fast and ends before the follow caught up: the follow, read by offset,
    still sends each line exactly once, in order, then ends."""
    script = f"import sys\nfor i in range({LINES}): print({EVENT!r}.format('line', i))\nsys.exit(3)"
    agreement_id, pid = fake_execution(own_gw, consumer, script)
    try:
        lines = list(consumer.client(own_gw).follow_logs(agreement_id, idle_timeout=60))
    finally:
        process.stop(pid)
    assert lines == [EVENT.format("line", i) for i in range(LINES)]


def test_concurrent_follows_per_consumer_are_bounded(
    own_gw: Gateway, consumer: Consumer, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    ready, done = EVENT.format("ready", 0), EVENT.format("done", 1)
    script = (
        f"import pathlib, sys, time\nprint({ready!r})\nwhile not pathlib.Path({str(release)!r}).exists():"
        f"\n    time.sleep(0.1)\nprint({done!r})\nsys.exit(3)"
    )
    agreement_id, pid = fake_execution(own_gw, consumer, script)
    client = consumer.client(own_gw)
    try:
        follows = [client.follow_logs(agreement_id, idle_timeout=60) for _ in range(MAX_FOLLOWS)]
        assert [next(f) for f in follows] == [ready] * MAX_FOLLOWS
        with pytest.raises(Exception) as refused:
            next(client.follow_logs(agreement_id, idle_timeout=60))
        assert getattr(refused.value, "status_code", None) == 429, refused.value
        follows.pop().close()  # a stream given up frees its slot
        extra = client.follow_logs(agreement_id, idle_timeout=60)
        follows.append(extra)
        release.touch()
        assert next(extra) == ready
        for follow in follows:
            assert list(follow)[-1] == done
    finally:
        process.stop(pid)


# -- outbound fetches and the lock table ---------------------------------------------------------------------


class DripServer:
    """Answers every GET with 200 and a body of ``total`` bytes, one byte every ``period`` s."""

    def __init__(self, total: int, period: float) -> None:
        drip = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(total))
                self.end_headers()
                for _ in range(total):
                    if drip.stop.wait(period):
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                return

        self.stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ddo.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fetch_bounded_in_time_and_size(own_gw: Gateway) -> None:
    """A URL a consumer names (a workflow DDO, a warm-start model) dripping slowly is cut off at the
    fetch's deadline; one larger than the limit is refused."""
    provider = Provider(gateway_config.load(own_gw.config_file))
    slow = DripServer(total=1_000_000, period=0.05)
    try:
        with pytest.raises(FetchError, match="not read within 1s"):
            provider.read(slow.url, seconds=1.0)
    finally:
        slow.close()
    big = DripServer(total=4096, period=0.0)
    try:
        with pytest.raises(FetchError, match="larger than 1000 bytes"):
            provider.read(big.url, limit=1000)
        assert provider.read(big.url) == b"x" * 4096
    finally:
        big.close()


def test_lock_table_holds_only_locks_in_use(tmp_path: Path) -> None:
    records = Records(tmp_path)
    with pytest.raises(Refusal, match="agreement id: expected 0x"), records.lock("../../etc/passwd"):
        pass
    for _ in range(1000):
        with records.lock("0x" + secrets.token_hex(32)):
            assert records.locks_in_use() == 1
    assert records.locks_in_use() == 0


# -- executions per consumer ---------------------------------------------------------------------------------

OTHER_CONSUMER, PER_CONSUMER_PROVIDER = 6, 7
"""Anvil dev accounts no other test uses: a second consumer, the provider of the bounded gateway."""


def second_consumer(chain_state: dict[str, Any], s3_state: dict[str, Any]) -> Consumer:
    """A consumer with its own key (anvil account :data:`OTHER_CONSUMER`), funded with 1,000 tokens."""
    deployment = load_deployment(chain_state["deployment_file"], HOOK_CONTRACTS)
    other = Consumer(chain_state, s3_state)
    other.keeper = Keeper(
        KeeperSettings(
            rpc_url=chain_state["rpc_url"],
            private_key=chain.account(OTHER_CONSUMER).key.to_0x_hex(),
            deployment=deployment,
            where="consumer",
        )
    )
    other.address = other.keeper.address
    owner = Signer(connect(chain_state["rpc_url"]), chain.account(chain.OWNER))
    mint(owner, deployment, other.address, other.keeper.token.base(1000))
    return other


def test_executions_per_consumer_are_bounded(
    tmp_path: Path,
    gw_chain: dict[str, Any],
    seaweed: dict[str, Any],
    consumer: Consumer,
    data_gw: Gateway,
    manifest: dict[str, Any],
) -> None:
    """A consumer with more locked agreements than ``max_executions_per_consumer`` is refused (429, nothing
    launched) past the bound, while another consumer still launches on the same gateway."""
    services = [{"name": "bounded", "type": "fl-coordinator", "price": 3}]
    gw = start_gateway(tmp_path, "bounded", PER_CONSUMER_PROVIDER, gw_chain, seaweed, services)
    try:
        config = json.loads(gw.config_file.read_text())
        gw.config_file.write_text(json.dumps({**config, "max_executions_per_consumer": 1}))
        restart(gw)
        assert consumer.client(gw).info()["capacity"]["max_executions_per_consumer"] == 1
        seats, model = [data_gw.asset("provider-1")["did"]], data.softmax_model(manifest)

        def execute(who: Consumer, agreement: dict[str, Any]) -> dict[str, Any]:
            workflow = who.coordinator_workflow(gw, f"bound-{secrets.token_hex(4)}", model, seats)
            who.client(gw).execute(agreement, workflow)
            return agreement

        first = execute(consumer, consumer.agreement(gw, "bounded"))
        past = consumer.agreement(gw, "bounded")  # locked, like the first
        with pytest.raises(GatewayError) as refused:
            execute(consumer, past)
        assert refused.value.status_code == 429, refused.value
        assert "max_executions_per_consumer=1" in str(refused.value)
        assert gw.nothing_launched(past["agreement_id"])
        other = second_consumer(gw_chain, seaweed)
        second = execute(other, other.agreement(gw, "bounded"))
        assert other.client(gw).status(second["agreement_id"])["state"] == "running"
        consumer.client(gw).stop(first["agreement_id"])
        execute(consumer, past)  # a stopped execution frees its consumer's slot
    finally:
        stop_gateway(gw)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "max_executions_per_consumer: must be at least 1"),
        ("4", "max_executions_per_consumer: expected int, got '4'"),
    ],
)
def test_bad_per_consumer_bound_is_refused_naming_the_field(tmp_path: Path, value: Any, message: str) -> None:
    document = {
        "name": "g",
        "key_file": "/k",
        "chain": {"rpc_url": "http://127.0.0.1:1", "deployment_file": "/d"},
        "state_dir": str(tmp_path),
        "storage": {"endpoint_url": "http://127.0.0.1:2", "bucket": "b", "credentials_file": "/c"},
        "services": [{"name": "c", "type": "fl-coordinator", "price": "1"}],
        "max_executions_per_consumer": value,
    }
    with pytest.raises(gateway_config.GatewayConfigError, match=message):
        gateway_config.parse(document)
    assert (
        gateway_config.parse({**document, "max_executions_per_consumer": 2}).max_executions_per_consumer == 2
    )
