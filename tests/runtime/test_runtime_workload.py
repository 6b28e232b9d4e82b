"""The names the runtime and its launchers share: states as plain strings, exit codes, command lines that
the runtime's own parsers read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from airflow_nevermined_fl.runtime.workload import (
    COORDINATOR_MODULE,
    PARTICIPANT_MODULE,
    ExecutionState,
    ExitCode,
    SessionState,
    coordinator_args,
    ended_state,
    participant_args,
)


def test_states_are_plain_strings() -> None:
    assert json.dumps({"state": SessionState.FINISHED}) == '{"state": "FINISHED"}'
    assert repr(ExecutionState.STOPPED) == "'stopped'" and ExecutionState.RUNNING == "running"
    assert (ended_state(0), ended_state(2), ended_state(None)) == ("finished", "failed", "failed")
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 143]


def _parse(fl_python: Path, module: str, fields: str, args: list[str]) -> list:
    code = (
        f"import json, sys; from {module} import build_parser;"
        f"a = build_parser().parse_args(sys.argv[1:]); print(json.dumps([{fields}], default=str))"
    )
    out = subprocess.run([str(fl_python), "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_participant_args_parse_in_the_participant(fl_python: Path) -> None:
    fields = "a.coordinator, a.coordinator_cert, a.seat_file, a.data, a.data_url_file, a.heartbeat, a.seed"
    local = participant_args("127.0.0.1:5000", "/w/c.crt", "/w/seat", data="/d.npz", heartbeat=0.5, seed=2)
    assert _parse(fl_python, PARTICIPANT_MODULE, fields, local) == [
        "127.0.0.1:5000",
        "/w/c.crt",
        "/w/seat",
        "/d.npz",
        None,
        0.5,
        2,
    ]
    granted = participant_args("coordinator:50051", "/w/c.crt", "/w/seat", data_url_file="/w/data-url")
    assert _parse(fl_python, PARTICIPANT_MODULE, fields, granted) == [
        "coordinator:50051",
        "/w/c.crt",
        "/w/seat",
        None,
        "/w/data-url",
        0.5,
        0,
    ]


def test_coordinator_args() -> None:
    assert COORDINATOR_MODULE.endswith(".coordinator")
    assert coordinator_args("/w/session.json") == ["--config", "/w/session.json"]
    assert coordinator_args("/w/c.json", "/w/ready") == ["--config", "/w/c.json", "--status-file", "/w/ready"]
