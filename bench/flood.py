"""Bad-ticket gRPC calls against a live coordinator while an honest session runs, beside a quiet session.

:func:`flood` is the hostile client (``bench/abuse.py`` calls it too): Heartbeat calls over TLS, each with a
fresh forged seat ticket, so each costs the coordinator a signature recovery unless it throttles the host.
The run: an honest secure session (coordinator + participants as FL-venv processes, non-IID digits, a
SeaweedFS started here) without hostile traffic, then one with ``--calls`` forged calls from ``--threads``
threads once its participants are seated. Prints how the calls ended, the coordinator's refusal log lines,
and the honest session's mean round time flooded vs quiet (ratio).

    .venv/bin/python bench/flood.py [--calls 10000] [--threads 4] [--rounds 20] [--participants 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import s3
from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.devtools.session_local import (
    RuntimeProcess,
    start_coordinator,
    start_participant,
    wait_ended,
)
from airflow_nevermined_fl.runtime.channel import TICKET_HEADER, TLS_NAME
from airflow_nevermined_fl.runtime.config import ModelSpec, SessionConfig, StorageSpec

HEARTBEAT = "/xain_proto.fl.Coordinator/Heartbeat"


def forged_ticket() -> str:
    """A ticket of the right form that no seat's key signed: an address and 65 random bytes."""
    return f"0x{os.urandom(20).hex()}.{os.urandom(65).hex()}"


def flood(grpc_url: str, cert: str, calls: int, threads: int, seconds: float = 300.0) -> Counter[str]:
    """``calls`` Heartbeat calls to the coordinator at ``grpc_url`` (``host:port``), each with a fresh forged
    seat ticket, from ``threads`` threads with a TLS channel each (pinned to the session certificate
    ``cert``, PEM); whatever is left after ``seconds`` is not sent (``NOT_SENT``). How the calls ended, by
    gRPC status code name."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(share: int) -> None:
        ended: Counter[str] = Counter()
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.encode())
        options = [("grpc.ssl_target_name_override", TLS_NAME)]
        with grpc.secure_channel(grpc_url, credentials, options=options) as channel:
            heartbeat = channel.unary_unary(HEARTBEAT)  # raw bytes: b"" is an empty HeartbeatRequest
            for sent in range(share):
                if time.monotonic() > deadline:
                    ended["NOT_SENT"] += share - sent
                    break
                try:
                    heartbeat(b"", metadata=((TICKET_HEADER, forged_ticket()),), timeout=10)
                    ended["OK"] += 1
                except grpc.RpcError as exc:
                    ended[exc.code().name] += 1
        with lock:
            counts.update(ended)

    shares = [calls // threads + (i < calls % threads) for i in range(threads)]
    workers = [threading.Thread(target=worker, args=(share,), daemon=True) for share in shares]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(seconds + 30)
    return counts


def refusal_lines(log: Path) -> dict[str, int]:
    """The coordinator log's ``Refused call`` lines and ``Refused calls`` summary lines."""
    lines = log.read_text(errors="replace").splitlines()
    return {
        "refused_call_lines": sum("event='Refused call'" in line for line in lines),
        "summary_lines": sum("event='Refused calls'" in line for line in lines),
    }


def session(args: argparse.Namespace, state: dict[str, Any], workdir: Path, flooded: bool) -> dict[str, Any]:
    """One honest session (flooded once its participants are seated, if ``flooded``); its report."""
    session_id = f"flood-{secrets.token_hex(4)}"
    manifest = data.partition(workdir / "data", args.participants, "non-iid", 0.5, 0.2, 0)
    storage = StorageSpec(state["bucket"], f"sessions/{session_id}", state["endpoint"])
    rows = [shard["rows"] for shard in manifest["providers"]]
    channel = SessionChannel.create(s3.client(state), storage, session_id, rows)
    config = SessionConfig(
        session_id=session_id,
        rounds=args.rounds,
        epochs=1,
        min_participants=args.participants,
        heartbeat_period=args.heartbeat,
        stall_timeout=60,
        linger=1,
        storage=storage,
        model=ModelSpec.of(data.softmax_model(manifest)),
        channel=channel.spec,
    )
    coordinator = start_coordinator(config, workdir, channel=channel)
    procs: list[RuntimeProcess] = [coordinator.process]
    calls: Counter[str] = Counter()
    try:
        for index, shard in enumerate(manifest["providers"]):
            procs.append(
                start_participant(
                    f"p{index}",
                    coordinator.grpc,
                    shard["path"],
                    channel.pair.cert_pem,
                    channel.ticket(index),
                    workdir,
                    args.heartbeat,
                )
            )
        deadline = time.monotonic() + 60
        while coordinator.status()["participants"]["connected"] < args.participants:
            if time.monotonic() > deadline:
                raise SystemExit("participants not seated within 60 s")
            time.sleep(0.05)
        attack = threading.Thread(
            target=lambda: calls.update(
                flood(coordinator.grpc, channel.pair.cert_pem, args.calls, args.threads)
            )
        )
        if flooded:
            attack.start()
        final = wait_ended(coordinator, 600)
        if flooded:
            attack.join()
    finally:
        for proc in procs:
            proc.stop()
    if final["state"] != "FINISHED":
        raise SystemExit(f"honest session did not finish: {final['reason']}")
    return {
        "rounds": [m["duration"] for m in final["rounds_metrics"]],
        "calls": dict(calls),
        "refused_calls": final["refused_calls"],
        **refusal_lines(coordinator.process.log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nvfl-bench-") as home:
        os.environ["NVFL_HOME"] = home
        state = s3.up(Path(home) / "devstack", None)
        try:
            quiet = session(args, state, Path(home) / "quiet", flooded=False)
            flooded = session(args, state, Path(home) / "flooded", flooded=True)
        finally:
            s3.down(state)
    means = {"quiet": statistics.mean(quiet["rounds"]), "flooded": statistics.mean(flooded["rounds"])}
    result = {
        "quiet": quiet,
        "flooded": flooded,
        "mean_round_s": means,
        "ratio_flooded_over_quiet": means["flooded"] / means["quiet"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.calls} forged-ticket calls from {args.threads} threads; {args.rounds} honest rounds each")
    print(f"how the calls ended: {flooded['calls']} (refused_calls in /status: {flooded['refused_calls']})")
    print(
        f"coordinator log: {flooded['refused_call_lines']} 'Refused call' lines, "
        f"{flooded['summary_lines']} 'Refused calls' summary lines"
    )
    for kind, mean in means.items():
        print(f"{kind:>8}: mean round {mean:.3f} s")
    print(f"ratio of mean round time (flooded / quiet): {result['ratio_flooded_over_quiet']:.3f}")


if __name__ == "__main__":
    main()
