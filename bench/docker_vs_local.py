"""Docker backend vs local processes, side by side: workload start latency and bare-session wall time.

    DOCKER_HOST=unix:///path/docker.sock .venv/bin/python bench/docker_vs_local.py [--repeat 5] [--rounds 3]

Start latency: ``launcher.start()`` returning (container created + started / process spawned), and until
the coordinator's status endpoint answers (Python import + xain-fl startup inside). Session: the same
2-participant digits session (softmax, 0.5 s heartbeat) through ``launchers.bare.BareSession`` on each
backend, coordinator and participants on the same backend. Needs the runtime image (built here if
missing, cached) and the FL venv; SeaweedFS runs on free 127.0.0.1 ports and everything is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from airflow_nevermined_fl import runtime_env
from airflow_nevermined_fl.devtools import data, images
from airflow_nevermined_fl.devtools.bare import BareSession
from airflow_nevermined_fl.devtools.devstack import s3
from airflow_nevermined_fl.gateway.launchers.base import Launcher
from airflow_nevermined_fl.gateway.launchers.docker import DockerLauncher, connection_json
from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher

CONN_ID = "nvfl_docker_bench"


Json = dict[str, Any]


def session(launcher: Launcher, seaweed: Json, manifest: Json, rounds: int) -> BareSession:
    run_id = f"bench-{uuid.uuid4().hex[:10]}"
    return BareSession.on_devstack_s3(
        seaweed,
        f"bench/{run_id}",
        coordinator_launcher=launcher,
        participant_launcher=launcher,
        shards=[p["path"] for p in manifest["providers"]],
        run_id=run_id,
        model=data.softmax_model(manifest),
        rounds=rounds,
        dag_id="nvfl_bench",
    )


def start_latency(launcher: Launcher, seaweed: Json, manifest: Json) -> tuple[float, float]:
    """(seconds until start() returned, seconds until the coordinator answered) for one coordinator."""
    bare = session(launcher, seaweed, manifest, 1)
    try:
        began = time.perf_counter()
        coordinator = bare.start_coordinator()
        started = time.perf_counter() - began
        bare.wait_healthy(coordinator)
        return started, time.perf_counter() - began
    finally:
        bare.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="start-latency samples per backend")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the timed session")
    args = parser.parse_args()

    runtime_env.install()
    images.build_all()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("NVFL_HOME", str(Path(tmp) / "home"))
        shard_dir = Path(tmp) / "shards"
        manifest = data.partition(shard_dir, 2, "iid", 0.5, 0.2, 0)
        for path in [Path(tmp), shard_dir, *shard_dir.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = connection_json(
            docker_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
            mounts=[f"{shard_dir}:{shard_dir}:ro"],
        )
        launchers: dict[str, Launcher] = {"docker": DockerLauncher(CONN_ID), "local": LocalLauncher()}
        seaweed = s3.up(Path(tmp) / "seaweed", None)
        try:
            results = {}
            for name, launcher in launchers.items():
                samples = [start_latency(launcher, seaweed, manifest) for _ in range(args.repeat)]
                report = session(launcher, seaweed, manifest, args.rounds).run()
                assert report["state"] == "FINISHED", report
                results[name] = {
                    "start_s": statistics.median(s[0] for s in samples),
                    "healthy_s": statistics.median(s[1] for s in samples),
                    "session_s": report["wall_time_s"],
                }
        finally:
            s3.down(seaweed)

    print(f"{args.repeat} start samples (median) per backend, one {args.rounds}-round 2-participant session")
    print(f"{'':32}{'docker':>10}{'local':>10}{'docker/local':>14}")
    rows = [
        ("workload start() returned, s", "start_s"),
        ("coordinator status answering, s", "healthy_s"),
        ("session wall time, s", "session_s"),
    ]
    for label, key in rows:
        docker, local = results["docker"][key], results["local"][key]
        print(f"{label:32}{docker:10.3f}{local:10.3f}{docker / local:14.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
