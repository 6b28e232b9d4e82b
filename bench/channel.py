"""Round latency on the secure session channel vs the plaintext one, side by side in one run.

Secure: TLS with the session's certificate, seat credentials on every call, weights through storage grants
as checked ``.npy``. Plaintext: the stock-SDK path (``stock_sdk`` coordinator, plaintext gRPC, peers known
by address, pickles in the bucket with S3 keys), run by the same softmax participant code and heartbeat
(``plaintext_participant.py``). Same machine, data (non-IID digits) and SeaweedFS (started here); the two
kinds of session alternate ``--pairs`` times. Prints each session's mean round latency and the ratio.

    .venv/bin/python bench/channel.py [--pairs 2] [--rounds 5] [--participants 3] [--heartbeat 0.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
from pathlib import Path
from typing import Any

from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import s3
from airflow_nevermined_fl.devtools.session_local import (
    LocalSession,
    RuntimeProcess,
    runtime_env,
    start_coordinator,
    wait_ended,
)
from airflow_nevermined_fl.runtime.config import ModelSpec, SessionConfig, StorageSpec

HERE = Path(__file__).resolve().parent


def secure(args: argparse.Namespace, state: dict[str, Any]) -> list[float]:
    report = LocalSession(
        participants=args.participants,
        rounds=args.rounds,
        heartbeat=args.heartbeat,
        s3_endpoint=state["endpoint"],
        bucket=state["bucket"],
    ).run()
    if report["state"] != "FINISHED":
        raise SystemExit(f"secure session did not finish: {report['reason']}")
    return [m["duration"] for m in report["rounds_metrics"]]


def plaintext(args: argparse.Namespace, state: dict[str, Any], workdir: Path) -> list[float]:
    manifest = data.partition(workdir / "data", args.participants, "non-iid", 0.5, 0.2, 0)
    bucket = f"plain-{secrets.token_hex(4)}"  # stock participants write at the bucket root
    s3.client(state).create_bucket(Bucket=bucket)
    config = SessionConfig(
        session_id=f"plain-{secrets.token_hex(3)}",
        rounds=args.rounds,
        epochs=3,  # LocalSession's default
        min_participants=args.participants,
        heartbeat_period=args.heartbeat,
        stall_timeout=60,
        linger=2 * args.heartbeat + 1,
        storage=StorageSpec(bucket, "", state["endpoint"]),
        model=ModelSpec.of(data.softmax_model(manifest)),
        stock_sdk=True,
    )
    keys = s3.env(state)
    coordinator = start_coordinator(config, workdir, secret_env=keys)
    host, _, port = coordinator.grpc.rpartition(":")
    procs = [coordinator.process]
    try:
        for index, shard in enumerate(manifest["providers"]):
            argv = [
                str(HERE / "plaintext_participant.py"),
                host,
                port,
                state["endpoint"],
                bucket,
                shard["path"],
            ]
            argv += [str(args.heartbeat), str(index)]
            log = workdir / f"participant-{index}.log"
            procs.append(RuntimeProcess.start(f"participant-{index}", argv, log, runtime_env(keys)))
        status = wait_ended(coordinator, 600)
    finally:
        for proc in procs:
            proc.stop()
    if status["state"] != "FINISHED":
        raise SystemExit(f"plaintext session did not finish: {status['reason']}")
    return [m["duration"] for m in status["rounds_metrics"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="secure/plaintext session pairs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds: dict[str, list[float]] = {"secure": [], "plaintext": []}
    with tempfile.TemporaryDirectory(prefix="nvfl-bench-") as home:
        os.environ["NVFL_HOME"] = home
        state = s3.up(Path(home) / "devstack", None)
        try:
            os.environ.update(s3.env(state))
            for pair in range(args.pairs):
                rounds["secure"] += secure(args, state)
                rounds["plaintext"] += plaintext(args, state, Path(home) / f"plain-{pair}")
        finally:
            s3.down(state)
    means = {kind: statistics.mean(values) for kind, values in rounds.items()}
    result = {
        "rounds": rounds,
        "mean_round_s": means,
        "median_round_s": {kind: statistics.median(values) for kind, values in rounds.items()},
        "ratio_secure_over_plaintext": means["secure"] / means["plaintext"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    shape = f"{args.rounds} rounds, {args.participants} participants, {args.heartbeat:g} s heartbeat"
    print(f"{args.pairs} x ({shape}) of each")
    for kind in rounds:
        print(f"{kind:>9}: mean round {means[kind]:.3f} s, median {result['median_round_s'][kind]:.3f} s")
    print(f"ratio of mean round latency (secure / plaintext): {result['ratio_secure_over_plaintext']:.3f}")


if __name__ == "__main__":
    main()
