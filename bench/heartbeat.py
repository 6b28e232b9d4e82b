"""Round latency: xain-sdk's fixed heartbeat (HEARTBEAT_TIME, 10 s) vs our tuned heartbeat, side by side.

Runs two real sessions (coordinator + 3 participants as FL-venv processes, 5 rounds, non-IID digits) against
a SeaweedFS it starts on free ports, one after the other on the same machine, and prints per-round latency,
the participants' training time inside each round, and the ratio.

    .venv/bin/python bench/heartbeat.py [--tuned SECONDS] [--rounds 5] [--participants 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from airflow_nevermined_fl.devtools.devstack import s3
from airflow_nevermined_fl.devtools.session_local import LocalSession
from airflow_nevermined_fl.runtime_env import runtime_python


def sdk_heartbeat() -> float:
    """The SDK's constant, read from the installed xain-sdk (not assumed)."""
    code = "from xain_sdk.participant_state_machine import HEARTBEAT_TIME; print(HEARTBEAT_TIME)"
    return float(
        subprocess.run([str(runtime_python()), "-c", code], capture_output=True, text=True, check=True).stdout
    )


def run(heartbeat: float, args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    report = LocalSession(
        participants=args.participants,
        rounds=args.rounds,
        heartbeat=heartbeat,
        s3_endpoint=state["endpoint"],
        bucket=state["bucket"],
    ).run()
    if report["state"] != "FINISHED":
        raise SystemExit(f"session with heartbeat {heartbeat}s did not finish: {report['reason']}")
    durations = [m["duration"] for m in report["rounds_metrics"]]
    return {
        "heartbeat_s": heartbeat,
        "round_latency_s": durations,
        "train_s": [m["train_seconds"] for m in report["rounds_metrics"]],
        "mean_round_s": statistics.mean(durations),
        "wall_time_s": report["wall_time_s"],
        "final_accuracy": report["final_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuned", type=float, default=0.5, help="tuned heartbeat period, seconds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nvfl-bench-") as home:
        os.environ["NVFL_HOME"] = home
        state = s3.up(Path(home) / "devstack", None)
        try:
            os.environ.update(s3.env(state))
            sdk = run(sdk_heartbeat(), args, state)
            tuned = run(args.tuned, args, state)
        finally:
            s3.down(state)
    ratio = sdk["mean_round_s"] / tuned["mean_round_s"]
    overhead = [lat - train for lat, train in zip(tuned["round_latency_s"], tuned["train_s"], strict=True)]
    result = {
        "sdk": sdk,
        "tuned": tuned,
        "ratio_sdk_over_tuned": ratio,
        "tuned_overhead_max_s": max(overhead),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    sdk_title, tuned_title = f"SDK {sdk['heartbeat_s']:g} s hb", f"tuned {args.tuned:g} s hb"
    print(f"{'round':>5} | {sdk_title:>14} | {tuned_title:>15} | {'tuned training':>14}")
    for index, (a, b, t) in enumerate(
        zip(sdk["round_latency_s"], tuned["round_latency_s"], tuned["train_s"], strict=True)
    ):
        print(f"{index:>5} | {a:>12.3f} s | {b:>13.3f} s | {t:>12.4f} s")
    print(f"{'mean':>5} | {sdk['mean_round_s']:>12.3f} s | {tuned['mean_round_s']:>13.3f} s |")
    print(f"wall time to FINISHED: SDK {sdk['wall_time_s']:.1f} s, tuned {tuned['wall_time_s']:.1f} s")
    print(f"final accuracy: SDK {sdk['final_accuracy']:.3f}, tuned {tuned['final_accuracy']:.3f}")
    print(f"ratio of mean round latency (SDK / tuned): {ratio:.1f}x")
    print(f"tuned round latency minus training time, worst round: {max(overhead):.3f} s (target <= 1.5 s)")


if __name__ == "__main__":
    main()
