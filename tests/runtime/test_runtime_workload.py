"""The names the runtime and its launchers share: states as plain strings, exit codes, command lines that
the runtime's own parsers read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from airflow_nevermined_fl.runtime.workload import (
    PARTICIPANT_MODULE,
    ExecutionState,
    ExitCode,
    SessionState,
    ended_state,
    participant_args,
)


def test_states_are_plain_strings() -> None:
    assert json.dumps({"state": SessionState.FINISHED}) == '{"state": "FINISHED"}'
    assert repr(ExecutionState.STOPPED) == "'stopped'" and ExecutionState.RUNNING == "running"
    assert (ended_state(0), ended_state(2), ended_state(None)) == ("finished", "failed", "failed")
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 143]


def test_participant_args_parse_in_the_participant(fl_python: Path) -> None:
    args = participant_args(
        "127.0.0.1:5000", "/d.npz", "s3://nvfl/p", s3_endpoint="http://s3:1", heartbeat=0.5, seed=2
    )
    code = (
        f"import json, sys; from {PARTICIPANT_MODULE} import build_parser;"
        "a = build_parser().parse_args(sys.argv[1:]);"
        "print(json.dumps([a.coordinator, a.data, a.storage.bucket, a.s3_endpoint, a.heartbeat, a.seed]))"
    )
    out = subprocess.run([str(fl_python), "-c", code, *args], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["127.0.0.1:5000", "/d.npz", "nvfl", "http://s3:1", 0.5, 2]
