"""Session time on the docker-compose stack against the embedded stack, side by side in one run.

Both stacks up at once on this host's Docker engine (``$DOCKER_HOST``), every workload a container in both:
  * embedded: ``nvfl devstack`` in a temporary NVFL_HOME (anvil, SeaweedFS, the four gateways on the
    ``docker`` backend, Airflow with the LocalExecutor on SQLite, all as local processes);
  * compose: ``docker-compose.yaml`` (free ports; Airflow's CeleryExecutor with two workers, PostgreSQL,
    Redis, SeaweedFS, the devchain and the four gateways, each a container).
One session on each first (warm-up), then ``--repeat`` pairs interleaved, so load drifting on the machine
affects both alike. Prints each stack's median session wall time (trigger over REST to the run's end) and
the compose/embedded ratio as JSON, and the stack start times.

Usage: .venv/bin/python bench/compose_vs_embedded.py [--rounds 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from orchestration import airflow_session, session_conf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="embedded/compose session pairs")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nvfl-bench-"))
    os.environ["NVFL_HOME"] = str(home)
    from airflow_nevermined_fl.client import AirflowClient
    from airflow_nevermined_fl.devtools import devstack, images
    from airflow_nevermined_fl.devtools.compose_stack import ComposeStack
    from airflow_nevermined_fl.devtools.devstack import airflow, gateways

    engine = images.local_engine()
    images.build_all(engine, compose=True)
    compose = ComposeStack(engine, home)
    starts, walls = {}, {"embedded": [], "compose": []}
    try:
        started = time.monotonic()
        status = devstack.up(backend="docker")
        starts["embedded_up_s"] = time.monotonic() - started
        state = devstack.load_state()
        embedded = AirflowClient(status["airflow_url"], airflow.USER, airflow.password(state["airflow"]))
        embedded.wait_dag("fl_session")
        started = time.monotonic()
        compose.up()
        compose.client.wait_dag("fl_session", timeout=300)
        starts["compose_up_s"] = time.monotonic() - started
        stacks = {
            "embedded": (embedded, session_conf(gateways.session_providers(state["gateways"]), args.rounds)),
            "compose": (compose.client, session_conf(compose.providers(), args.rounds)),
        }
        for client, conf in stacks.values():  # warm-up: first runs parse, import and connect
            airflow_session(client, conf)
        for _ in range(args.repeat):
            for name, (client, conf) in stacks.items():
                walls[name].append(airflow_session(client, conf)["wall_s"])
    finally:
        compose.down()
        devstack.down()
        shutil.rmtree(home, ignore_errors=True)
    embedded_s, compose_s = statistics.median(walls["embedded"]), statistics.median(walls["compose"])
    result = {
        "rounds": args.rounds,
        "repeat": args.repeat,
        "embedded_session_wall_s": round(embedded_s, 2),
        "compose_session_wall_s": round(compose_s, 2),
        "compose_to_embedded_ratio": round(compose_s / embedded_s, 2),
        "samples": {name: [round(w, 2) for w in values] for name, values in walls.items()},
        **{name: round(seconds, 1) for name, seconds in starts.items()},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
