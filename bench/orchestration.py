"""Orchestration overhead and worker slots of an FL session run through Airflow.

One run, side by side on one embedded stack (chain, S3, the four provider gateways, Airflow on 127.0.0.1,
in a temporary NVFL_HOME):
  1. the session bare: ``nvfl session local`` (coordinator + participants, no Airflow, no chain);
  2. the same session (data split, rounds, epochs, heartbeat) as a DAG run triggered over REST, every
     workload started by its provider's gateway after its on-chain checks: a first run on a fresh Airflow
     (workers warming up), then ``--repeat`` pairs of bare and Airflow sessions, interleaved; the figures
     are the medians;
  3. worker slots held while the session waits: task instances in state ``running`` sampled while
     ``wait_for_rounds`` is deferred.
Prints the figures and the overhead (Airflow wall time minus bare wall time) as JSON, and per task of the
measured run the seconds from the run's start to its queueing, start and end (task instances from REST;
``--tasks`` prints them).

Usage: .venv/bin/python bench/orchestration.py [--rounds 3] [--repeat 3] [--tasks] [--keep]
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
from datetime import datetime
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


def session_conf(providers: dict[str, Any], rounds: int) -> dict[str, Any]:
    """The session on the devstack's gateways (3 data providers), sized like the bare session."""
    return {**providers, "rounds": rounds, "epochs": 1, "min_participants": 3, "heartbeat": HEARTBEAT}


def _at(stamp: str | None, origin: datetime) -> float | None:
    return None if stamp is None else round((datetime.fromisoformat(stamp) - origin).total_seconds(), 2)


def task_timeline(run: dict[str, Any], tis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task instance: seconds from the run's start to queued, start and end, and its try number."""
    origin = datetime.fromisoformat(run["start_date"])
    rows = [
        {
            "task": ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""),
            "queued": _at(ti.get("queued_when"), origin),
            "start": _at(ti.get("start_date"), origin),
            "end": _at(ti.get("end_date"), origin),
            "try": ti.get("try_number"),
        }
        for ti in tis
    ]
    queued, end = _at(run.get("queued_at"), origin), _at(run["end_date"], origin)
    rows.append({"task": "(run)", "queued": queued, "start": 0.0, "end": end, "try": None})
    return sorted(rows, key=lambda r: (r["start"] is None, r["start"] or 0.0))


def airflow_session(
    client: Any, conf: dict[str, Any], poll: float = 0.2, sample_every: float = 0.5
) -> dict[str, Any]:
    """Trigger over REST, poll the run's state every ``poll`` s until it ends (its wall time) and sample
    the task states every ``sample_every`` s (slots held while waiting)."""
    started = time.monotonic()
    run_id = client.trigger("fl_session", conf)["dag_run_id"]
    running_while_waiting: list[int] = []
    next_sample = started
    while True:
        state = client.run("fl_session", run_id)["state"]
        if state in ("success", "failed"):
            break
        if time.monotonic() >= next_sample:
            next_sample += sample_every
            tis = client.task_instances("fl_session", run_id)
            if any(ti["task_id"] == "wait_for_rounds" and ti["state"] == "deferred" for ti in tis):
                running_while_waiting.append(sum(ti["state"] == "running" for ti in tis))
        time.sleep(poll)
    wall = time.monotonic() - started
    assert state == "success", f"run {run_id} {state}"
    timeline = task_timeline(client.run("fl_session", run_id), client.task_instances("fl_session", run_id))
    return {
        "wall_s": wall,
        "tasks": timeline,
        "samples_while_waiting": len(running_while_waiting),
        "max_running_while_waiting": max(running_while_waiting, default=0),
        "mean_running_while_waiting": statistics.fmean(running_while_waiting)
        if running_while_waiting
        else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", action="store_true", help="print the measured run's task timeline")
    parser.add_argument("--keep", action="store_true", help="keep the temporary NVFL_HOME (logs)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="bare/Airflow pairs of the 3-participant session"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nvfl-bench-"))
    os.environ["NVFL_HOME"] = str(home)
    from airflow_nevermined_fl.client import AirflowClient
    from airflow_nevermined_fl.devtools import devstack
    from airflow_nevermined_fl.devtools.devstack import airflow, gateways

    try:
        status = devstack.up()
        state = devstack.load_state()
        conf = session_conf(gateways.session_providers(state["gateways"]), args.rounds)
        client = AirflowClient(status["airflow_url"], airflow.USER, airflow.password(state["airflow"]))
        client.wait_dag("fl_session")
        cold = airflow_session(client, conf)  # first run: workers warm up
        bare, runs = [], []
        for _ in range(args.repeat):  # interleaved, so load drifting on the machine affects both alike
            bare.append(bare_session(3, args.rounds))
            runs.append(airflow_session(client, conf))
        client.close()
    finally:
        devstack.down()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    bare_s = statistics.median(b["session_wall_s"] for b in bare)
    bare_command_s = statistics.median(b["command_wall_s"] for b in bare)
    median_run = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    airflow_s = median_run["wall_s"]
    slots = {
        "samples_while_waiting": sum(r["samples_while_waiting"] for r in runs),
        "max_running_while_waiting": max(r["max_running_while_waiting"] for r in runs),
        "mean_running_while_waiting": round(
            statistics.fmean(r["mean_running_while_waiting"] for r in runs), 2
        ),
    }
    result = {
        **({"nvfl_home": str(home)} if args.keep else {}),
        "rounds": args.rounds,
        "heartbeat_s": HEARTBEAT,
        "repeat": args.repeat,
        "bare_session_wall_s": round(bare_s, 2),
        "bare_command_wall_s": round(bare_command_s, 2),
        "airflow_session_wall_s": round(airflow_s, 2),
        "airflow_first_session_wall_s": round(cold["wall_s"], 2),
        "orchestration_overhead_s": round(airflow_s - bare_s, 2),
        "overhead_vs_bare_command_s": round(airflow_s - bare_command_s, 2),
        "airflow_to_bare_ratio": round(airflow_s / bare_s, 2),
        "samples": {
            "bare_session_wall_s": [round(b["session_wall_s"], 2) for b in bare],
            "airflow_session_wall_s": [round(r["wall_s"], 2) for r in runs],
        },
        "slots_3_participants": slots,
    }
    if args.tasks:
        result["tasks"] = {"first_run": cold["tasks"], "measured_run": median_run["tasks"]}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
