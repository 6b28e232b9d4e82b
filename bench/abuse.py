"""An honest FL session through real gateways while hostile clients hammer them (issue 20), loopback only.

One embedded stack in a temporary directory: anvil with the contracts, SeaweedFS, four gateways as their own
processes (the coordinator provider's, three data providers' with a shard each), the consumer of the
gateway tests (``tests/gateway/gatewaystack.py``). It runs the same session twice, quiet then under
attack, and prints as JSON:
  - the honest session's mean round time (the coordinator's own ``duration`` per round) quiet and under
    attack, and their ratio;
  - each gateway's and the coordinator's peak resident memory during the attack (``VmRSS``, sampled);
  - how each hostile request ended (HTTP status counts, or the transport error's name).
The attack, every loop bounded in count and time: 1 GB bodies (declared and chunked, unsigned), slow-drip
bodies (signature headers present, one byte per second), 1,000 replays of a signature the consumer used,
50 log follows by a stranger, ``info`` floods, and 10,000 gRPC calls with forged seat tickets against the
attacked session's coordinator once its participants are seated (``bench/flood.py``; its address and
certificate from the coordinator gateway's signed announcement, as a participant gets them), with how long
they took and whether they ended before the session did.

Usage: .venv/bin/python bench/abuse.py [--rounds 10] [--keep]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "gateway"))

from flood import flood  # noqa: E402
from gatewaystack import Consumer, Gateway, start_gateway, stop_gateway, wait_for  # noqa: E402

from airflow_nevermined_fl.devtools import data  # noqa: E402
from airflow_nevermined_fl.devtools.devstack import chain, s3  # noqa: E402
from airflow_nevermined_fl.protocol import API, auth  # noqa: E402
from airflow_nevermined_fl.protocol.client import GatewayClient, GatewayError  # noqa: E402

GB = 1 << 30
CHUNK = 64 * 1024
ATTACK_SECONDS = 120.0
"""No hostile loop runs longer than this."""
BAD_TICKETS, BAD_TICKET_THREADS = 10_000, 4


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Peaks:
    """Peak resident memory of named processes, sampled every 0.1 s until stopped."""

    def __init__(self, pids: Callable[[], dict[str, int]]) -> None:
        self.pids, self.peak = pids, Counter[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for name, pid in self.pids().items():
                self.peak[name] = max(self.peak[name], rss(pid))

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the honest session --------------------------------------------------------------------------------------


class Session:
    """One session: the coordinator on ``coordinator_gw``, a participant on each data gateway; ``seated`` is
    called with the coordinator's signed announcement once every participant is seated."""

    def __init__(
        self,
        consumer: Consumer,
        coordinator_gw: Gateway,
        data_gws: list[Gateway],
        rounds: int,
        seated: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.consumer, self.coordinator_gw, self.data_gws, self.rounds = (
            consumer,
            coordinator_gw,
            data_gws,
            rounds,
        )
        self.seated, self.ended = seated, 0.0
        self.session_id = f"abuse-{uuid.uuid4().hex[:8]}"
        self.coordinator: dict[str, Any] = {}
        self.log_lines: dict[str, int] = {}

    def run(self, model: dict[str, Any]) -> dict[str, Any]:
        consumer, gw = self.consumer, self.coordinator_gw
        seats = [g.asset(g.name)["did"] for g in self.data_gws]
        conf = {"rounds": self.rounds, "min_participants": len(seats), "heartbeat": 0.5}
        coordinator_did = consumer.coordinator_workflow(gw, self.session_id, model, seats, **conf)
        self.coordinator = consumer.agreement(gw, "coordinator")
        client = consumer.client(gw)
        client.execute(self.coordinator, coordinator_did)
        up = wait_for(
            lambda: (s := client.status(self.coordinator["agreement_id"]))["announcement"] and s,
            90,
            "coordinator",
        )
        consumer.annotate(
            coordinator_did, coordinatorUrl=up["coordinator_url"], coordinatorAnnouncement=up["announcement"]
        )
        follows = []
        for g in self.data_gws:
            did = consumer.participant_workflow(g, g.name, self.session_id, coordinator_did, model)
            agreement = consumer.agreement(g, g.name)
            consumer.client(g).execute(agreement, did)
            follows.append(
                threading.Thread(target=self._follow, args=(g, agreement["agreement_id"]), daemon=True)
            )
        for follow in follows:
            follow.start()
        if self.seated:
            wait_for(lambda: self._seated(client, len(seats)), 120, "participants seated")
            self.seated(up["announcement"])
        done = wait_for(
            lambda: (s := client.status(self.coordinator["agreement_id"]))["state"] != "running" and s,
            600,
            "end",
        )
        self.ended = time.monotonic()
        for follow in follows:
            follow.join(timeout=60)
        status = done["coordinator"] or {}
        durations = [m["duration"] for m in status.get("rounds_metrics") or [] if m.get("duration")]
        client.stop(self.coordinator["agreement_id"])
        return {
            "state": done["state"],
            "coordinator_state": status.get("state"),
            "rounds": len(durations),
            "mean_round_s": statistics.mean(durations) if durations else None,
            "log_lines": dict(self.log_lines),
        }

    def _seated(self, client: GatewayClient, seats: int) -> bool:
        """Whether the coordinator seated ``seats`` participants (or the session ended)."""
        status = client.status(self.coordinator["agreement_id"])
        connected = ((status["coordinator"] or {}).get("participants") or {}).get("connected", 0)
        return status["state"] != "running" or connected >= seats

    def _follow(self, gateway: Gateway, agreement_id: str) -> None:
        count = 0
        try:
            for _ in self.consumer.client(gateway).follow_logs(agreement_id, idle_timeout=300):
                count += 1
        except GatewayError:
            pass
        self.log_lines[gateway.name] = count


# -- the attackers -------------------------------------------------------------------------------------------


def _status(sock: socket.socket) -> str:
    sock.settimeout(30)
    answer = b""
    try:
        while b"\r\n" not in answer:
            part = sock.recv(4096)
            if not part:
                return "closed"
            answer += part
    except OSError as exc:
        return type(exc).__name__
    return answer.split()[1].decode()


def big_body(endpoint: str, chunked: bool) -> str:
    """An unsigned 1 GB execute body, sent until the gateway answers."""
    host, port = endpoint.removeprefix("http://").split(":")
    path = f"{API}/compute/execute/0x{secrets.token_hex(32)}"
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {GB}"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{framing}\r\n\r\n".encode())
        sock.settimeout(0.5)
        block = bytes(CHUNK)
        frame = f"{CHUNK:x}\r\n".encode() + block + b"\r\n" if chunked else block
        deadline = time.monotonic() + 30
        for _ in range(GB // CHUNK):
            if time.monotonic() > deadline:
                return "still sending after 30 s"
            try:
                sock.sendall(frame)
            except TimeoutError:
                break  # the gateway stopped reading: its answer is there
            except OSError:
                break
        return _status(sock)


def slow_body(endpoint: str) -> str:
    """A body with signature headers that drips one byte per second (at most 60 s)."""
    host, port = endpoint.removeprefix("http://").split(":")
    path = f"{API}/compute/execute/0x{secrets.token_hex(32)}"
    headers = "".join(f"{name}: x\r\n" for name in auth.HEADERS)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: 60000\r\n\r\n".encode()
        )
        sock.settimeout(1.0)
        for _ in range(60):
            try:
                if sock.recv(4096, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            try:
                sock.send(b"{")
            except OSError:
                break
        return _status(sock)


def replay(http: httpx.Client, path: str, headers: dict[str, str]) -> str:
    return str(http.get(path, headers=headers).status_code)


def stranger_follow(gateway: Gateway, agreement_id: str, chain_id: int) -> str:
    """A follow of the consumer's execution signed by someone else."""
    stranger = Account.create()
    client = GatewayClient(
        gateway.endpoint,
        audience=gateway.address,
        address=stranger.address,
        sign=lambda text: stranger.sign_message(encode_defunct(text=text)).signature.to_0x_hex(),
        chain_id=chain_id,
        timeout=30,
    )
    try:
        for _ in client.follow_logs(agreement_id, idle_timeout=30):
            break
        return "200"
    except GatewayError as err:
        return str(err.status_code or err.detail)


def info(http: httpx.Client) -> str:
    try:
        return str(http.get(f"{API}/info").status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


class Attack:
    """Hostile clients against ``gateways`` until :meth:`stop` (each loop bounded in count and in
    :data:`ATTACK_SECONDS`), ``agreement_id``: an execution of the consumer at the first (coordinator)
    gateway, whose status the consumer signed once and the attackers replay."""

    def __init__(self, consumer: Consumer, gateways: list[Gateway], agreement_id: str) -> None:
        self.consumer, self.gateways, self.agreement_id = consumer, gateways, agreement_id
        self.outcomes: dict[str, Counter[str]] = {}
        self.flood_span: tuple[float, float] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _loop(self, name: str, count: int, call: Callable[[], str], whole: bool = False) -> None:
        """``call`` ``count`` times, until stopped (unless ``whole``) or :data:`ATTACK_SECONDS` passed."""
        deadline = time.monotonic() + ATTACK_SECONDS
        for _ in range(count):
            if (self._stop.is_set() and not whole) or time.monotonic() > deadline:
                return
            outcome = call()
            with self._lock:
                self.outcomes.setdefault(name, Counter())[outcome] += 1

    def _spawn(
        self, name: str, count: int, call: Callable[[], str], copies: int = 1, whole: bool = False
    ) -> None:
        for _ in range(copies):
            thread = threading.Thread(target=self._loop, args=(name, count, call, whole), daemon=True)
            thread.start()
            self._threads.append(thread)

    def start(self) -> None:
        coordinator_gw, consumer = self.gateways[0], self.consumer
        path = f"{API}/compute/status/{self.agreement_id}"
        audience = consumer.audience(coordinator_gw)
        signed = auth.signed_headers(consumer.keeper.sign_message, consumer.address, "GET", path, audience)
        replays = httpx.Client(base_url=coordinator_gw.endpoint, timeout=30)
        assert replays.get(path, headers=signed).status_code == 200  # the one honest use
        for g in self.gateways:
            self._spawn("1GB body, Content-Length (unsigned)", 10, lambda g=g: big_body(g.endpoint, False))
            self._spawn("1GB body, chunked (unsigned)", 10, lambda g=g: big_body(g.endpoint, True))
            self._spawn("slow-drip body", 3, lambda g=g: slow_body(g.endpoint), copies=5)
            flood = httpx.Client(base_url=g.endpoint, timeout=30)
            self._spawn("info flood (public endpoint)", 2000, lambda flood=flood: info(flood))
        self._spawn("replayed signature", 1000, lambda: replay(replays, path, signed), whole=True)
        self._spawn(
            "log follow by a stranger",
            5,
            lambda: stranger_follow(coordinator_gw, self.agreement_id, consumer.chain_id),
            copies=10,
        )

    def bad_tickets(self, announcement: dict[str, Any]) -> None:
        """:data:`BAD_TICKETS` forged-ticket gRPC calls to the announced coordinator, in the background."""

        def run() -> None:
            start = time.monotonic()
            ended = flood(
                announcement["url"], announcement["tls_cert"], BAD_TICKETS, BAD_TICKET_THREADS, ATTACK_SECONDS
            )
            with self._lock:
                self.outcomes[f"{BAD_TICKETS} bad-ticket gRPC calls (coordinator)"] = ended
                self.flood_span = (start, time.monotonic())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> dict[str, dict[str, int]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ATTACK_SECONDS)
        return {name: dict(counts) for name, counts in sorted(self.outcomes.items())}


# -- the stack -----------------------------------------------------------------------------------------------


@contextmanager
def stack(home: Path) -> Iterator[tuple[Consumer, list[Gateway], dict[str, Any]]]:
    """The embedded stack under ``home``: the consumer, the gateways (coordinator first), the model."""
    chain_state = chain.up(home / "chain", None)
    s3_state = s3.up(home / "s3", None)
    gateways: list[Gateway] = []
    try:
        manifest = data.partition(home / "data", 3, scheme="iid", seed=0)
        coordinator = [{"name": "coordinator", "type": "fl-coordinator", "price": 10}]
        gateways.append(
            start_gateway(
                home / "gw-coordinator",
                "coordinator",
                chain.COORDINATOR_PROVIDER,
                chain_state,
                s3_state,
                coordinator,
            )
        )
        for i, account in enumerate(chain.DATA_PROVIDERS):
            name = f"provider-{i + 1}"
            service = [
                {
                    "name": name,
                    "type": "fl-participant",
                    "price": "5",
                    "dataset": manifest["providers"][i]["path"],
                }
            ]
            gateways.append(start_gateway(home / f"gw-{name}", name, account, chain_state, s3_state, service))
        yield Consumer(chain_state, s3_state), gateways, data.softmax_model(manifest)
    finally:
        for gateway in gateways:
            stop_gateway(gateway)
        s3.down(s3_state)
        chain.down(chain_state)


def coordinator_pid(gateway: Gateway) -> int | None:
    """The newest coordinator workload's runtime process: the largest process under the local launcher's
    shell."""
    records = sorted(
        gateway.state_dir.glob("workloads/*/coordinator-*/workload.json"), key=lambda p: p.stat().st_mtime
    )
    if not records:
        return None
    tree, pid = [], json.loads(records[-1].read_text())["details"]["pid"]
    pending = [pid]
    while pending:
        tree.append(pending.pop())
        try:
            pending += [
                int(c) for c in Path(f"/proc/{tree[-1]}/task/{tree[-1]}/children").read_text().split()
            ]
        except OSError:
            continue
    return max(tree, key=rss) if rss(pid) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the temporary stack directory")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nvfl-abuse-"))
    try:
        with stack(home) as (consumer, gateways, model):
            coordinator_gw, data_gws = gateways[0], gateways[1:]
            first = Session(consumer, coordinator_gw, data_gws, args.rounds)
            quiet = first.run(model)

            def pids() -> dict[str, int]:
                found = {g.name: g.pid for g in gateways}
                if (pid := coordinator_pid(coordinator_gw)) is not None:
                    found["coordinator (workload)"] = pid
                return found

            attack = Attack(consumer, gateways, first.coordinator["agreement_id"])
            hostile = Session(consumer, coordinator_gw, data_gws, args.rounds, seated=attack.bad_tickets)
            with Peaks(pids) as peaks:
                attack.start()
                try:
                    attacked = hostile.run(model)
                finally:
                    outcomes = attack.stop()
            ratio = (
                attacked["mean_round_s"] / quiet["mean_round_s"]
                if attacked["mean_round_s"] and quiet["mean_round_s"]
                else None
            )
            print(
                json.dumps(
                    {
                        "quiet": quiet,
                        "under_attack": attacked,
                        "round_time_ratio": ratio,
                        "peak_rss_mb": {name: round(v / 2**20, 1) for name, v in peaks.peak.items()},
                        "hostile_outcomes": outcomes,
                        "bad_ticket_flood": attack.flood_span
                        and {
                            "seconds": round(attack.flood_span[1] - attack.flood_span[0], 2),
                            "ended_before_the_session": attack.flood_span[1] <= hostile.ended,
                        },
                    },
                    indent=2,
                )
            )
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
