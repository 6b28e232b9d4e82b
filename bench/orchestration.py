"""Orchestration overhead and worker slots of an FL session run through Airflow.

One run, side by side on one embedded stack (chain, S3, Airflow on 127.0.0.1, in a temporary NVFL_HOME):
  1. the session bare: ``nvfl session local`` (coordinator + participants, no Airflow, no chain);
  2. the same session (data split, rounds, epochs, heartbeat) as a DAG run triggered over REST, twice:
     the first run on a fresh Airflow (workers warming up) and the measured, second one;
  3. worker slots held while the session waits, with 3 and with 12 participants: task instances in
     state ``running`` sampled while ``wait_for_rounds`` is deferred.
Prints the figures and the overhead (Airflow wall time minus bare wall time) as JSON.

Usage: .venv/bin/python bench/orchestration.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEARTBEAT = 1.0


def bare_session(participants: int, rounds: int) -> dict[str, Any]:
    """``nvfl session local``: wall time of the command and the session's own wall time."""
    argv = [str(Path(sys.executable).parent / "nvfl"), "session", "local", "--json"]
    argv += ["--participants", str(participants), "--rounds", str(rounds), "--epochs", "1"]
    argv += ["--heartbeat", str(HEARTBEAT), "--scheme", "non-iid", "--seed", "0"]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    command_wall = time.monotonic() - started
    report = json.loads(result.stdout)
    assert report["state"] == "FINISHED", report
    return {"command_wall_s": command_wall, "session_wall_s": report["wall_time_s"]}


def session_conf(manifest: dict[str, Any], rounds: int) -> dict[str, Any]:
    """The demo conf with one data provider per shard (3 provider accounts reused round robin)."""
    from airflow_nevermined_fl.demo import demo_conf

    conf = demo_conf({**manifest, "providers": manifest["providers"][:3]}, rounds)
    conf["data_providers"] = [
        {
            "name": f"provider-{i}",
            "conn_id": f"nevermined_provider_{(i - 1) % 3 + 1}",
            "dataset": shard["path"],
            "price": 5,
            "backend": "local",
        }
        for i, shard in enumerate(manifest["providers"], start=1)
    ]
    conf.update(min_participants=len(manifest["providers"]), heartbeat=HEARTBEAT, epochs=1)
    return conf


def airflow_session(client: Any, conf: dict[str, Any], poll: float = 0.5) -> dict[str, Any]:
    """Trigger over REST, sample task states until the run ends; wall time and slots while waiting."""
    started = time.monotonic()
    run_id = client.trigger("fl_session", conf)["dag_run_id"]
    running_while_waiting: list[int] = []
    deferred_s = 0.0
    while True:
        state = client.run("fl_session", run_id)["state"]
        if state in ("success", "failed"):
            break
        tis = client.task_instances("fl_session", run_id)
        waiting = any(ti["task_id"] == "wait_for_rounds" and ti["state"] == "deferred" for ti in tis)
        if waiting:
            running_while_waiting.append(sum(ti["state"] == "running" for ti in tis))
            deferred_s += poll
        time.sleep(poll)
    wall = time.monotonic() - started
    assert state == "success", f"run {run_id} {state}"
    return {
        "wall_s": wall,
        "samples_while_waiting": len(running_while_waiting),
        "max_running_while_waiting": max(running_while_waiting, default=0),
        "mean_running_while_waiting": statistics.fmean(running_while_waiting)
        if running_while_waiting
        else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nvfl-bench-"))
    os.environ["NVFL_HOME"] = str(home)
    from airflow_nevermined_fl import data, devstack
    from airflow_nevermined_fl.devstack import airflow
    from airflow_nevermined_fl.rest import AirflowClient

    try:
        status = devstack.up()
        bare = bare_session(3, args.rounds)
        manifests = {
            n: data.partition(home / "data" / f"bench-{n}", n, scheme="non-iid", seed=0) for n in (3, 12)
        }
        state = devstack.load_state()
        client = AirflowClient(status["airflow_url"], airflow.USER, airflow.password(state["airflow"]))
        client.wait_dag("fl_session")
        cold = airflow_session(client, session_conf(manifests[3], args.rounds))  # first run: workers warm up
        slots = {n: airflow_session(client, session_conf(manifests[n], args.rounds)) for n in (3, 12)}
        client.close()
    finally:
        devstack.down()
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "rounds": args.rounds,
        "heartbeat_s": HEARTBEAT,
        "bare_session_wall_s": round(bare["session_wall_s"], 2),
        "bare_command_wall_s": round(bare["command_wall_s"], 2),
        "airflow_session_wall_s": round(slots[3]["wall_s"], 2),
        "airflow_first_session_wall_s": round(cold["wall_s"], 2),
        "orchestration_overhead_s": round(slots[3]["wall_s"] - bare["session_wall_s"], 2),
        "overhead_vs_bare_command_s": round(slots[3]["wall_s"] - bare["command_wall_s"], 2),
        "airflow_to_bare_ratio": round(slots[3]["wall_s"] / bare["session_wall_s"], 2),
        "slots": {
            f"{n}_participants": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in s.items()}
            for n, s in slots.items()
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
