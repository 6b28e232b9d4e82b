"""``nvfl session`` as a user runs it (a subprocess, Airflow's URL and account in ``NVFL_AIRFLOW_*``) on
the DAG tests' real Airflow and stack: ``run --wait`` follows a session round by round to its final
accuracy; ``ls``, ``status`` and ``logs`` show it; ``stop`` ends a long session: its running tasks fail,
its teardown stops every workload and, once the agreements' time-out passed on chain, refunds every
payment, and only then does the run end failed. No output holds a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagstack import Api, Stack, assert_no_secrets

DAG = "fl_session"
NVFL = Path(sys.executable).parent / "nvfl"
Nvfl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def nvfl(api: Api, tmp_path: Path) -> tuple[Nvfl, dict[str, str]]:
    """``nvfl session ...`` against the test Airflow (no config file); its environment."""
    from airflow_nevermined_fl.devtools.devstack import airflow

    env = {k: v for k, v in os.environ.items() if not k.startswith("NVFL_AIRFLOW_")}
    env |= {
        "NVFL_AIRFLOW_URL": api.state["url"],
        "NVFL_AIRFLOW_USER": airflow.USER,
        "NVFL_AIRFLOW_PASSWORD": airflow.password(api.state),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }

    def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NVFL), "session", *argv], capture_output=True, text=True, env=env, timeout=timeout
        )

    return run, env


def _run_id(output: str) -> str:
    """The run id of ``run``'s first line: ``run <id> of <dag>: <state>``."""
    first = output.splitlines()[0]
    assert first.startswith("run ") and f" of {DAG}: " in first, output
    return first.split()[1]


def _assert_clean(stack: Stack, api: Api, *texts: str) -> None:
    """No secret of the stack in ``texts``, nor Airflow's password."""
    from airflow_nevermined_fl.devtools.devstack import airflow

    assert_no_secrets(stack, *texts)
    assert not any(airflow.password(api.state) in text for text in texts)


def _conf_file(tmp_path: Path, conf: dict[str, Any]) -> str:
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    return f"@{path}"


def test_run_wait_then_ls_status_logs(
    api: Api, stack: Stack, nvfl: tuple[Nvfl, dict[str, str]], tmp_path: Path
) -> None:
    session, _ = nvfl
    started = time.monotonic()
    run = session(
        "run", "--conf", _conf_file(tmp_path, stack.conf()), "--set", "rounds=2", "--wait", timeout=900
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = _run_id(run.stdout)
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("round ")] == ["round 0", "round 1"]
    assert f"run {run_id}: success" in lines
    (final,) = [line for line in lines if line.startswith("final accuracy: ")]
    assert 0.5 < float(final.split(": ")[1]) <= 1.0
    assert any(line.startswith("model: did:nv:") for line in lines)
    assert "  wait_for_rounds: deferred" in lines  # the task states as they change

    listed = session("ls", "--limit", "50")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split() for line in listed.stdout.splitlines() if line.startswith(run_id + " ")]
    assert row[1] == "success" and row[-2] == "2" and abs(float(row[-1]) - float(final.split(": ")[1])) < 1e-4
    (item,) = [r for r in json.loads(session("ls", "--json").stdout) if r["run_id"] == run_id]
    assert item["rounds"] == 2 and item["state"] == "success" and item["end_date"]

    status = session("status", run_id)
    assert status.returncode == 0, status.stderr
    assert f"run {run_id} of {DAG}: success" in status.stdout and "rounds: 2 of 2" in status.stdout
    assert "  round 1: accuracy " in status.stdout and "\nmodel: did:nv:" in status.stdout
    shown = json.loads(session("status", run_id, "--json").stdout)
    assert shown["model_did"].startswith("did:nv:") and [r["round"] for r in shown["rounds"]] == [0, 1]
    assert set(shown["tasks"].values()) == {"success"} and len(shown["payments"]) == 4
    assert shown["run"]["conf"]["rounds"] == 2

    validate = session("logs", run_id, "--task", "validate")
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout.startswith("==> validate try 1 (success) <==\n")
    rounds_log = session("logs", run_id, "--task", "wait_for_rounds").stdout
    assert "round 1 finished" in rounds_log  # the trigger's log lines reach the task's log
    every = session("logs", run_id)
    headers = [line for line in every.stdout.splitlines() if line.startswith("==> ")]
    assert "==> lock_payment[2] try 1 (success) <==" in headers and headers[-1].startswith("==> teardown ")
    unknown = session("logs", run_id, "--task", "nope")
    assert unknown.returncode == 2 and "has no task 'nope'" in unknown.stderr
    _assert_clean(stack, api, *(p.stdout + p.stderr for p in (run, listed, status, validate, every)))
    print(f"nvfl session run --wait: {took:.1f}s for 2 rounds")


def _task_state(api: Api, run_id: str, task_id: str) -> str | None:
    tis = api.client.task_instances(DAG, run_id)
    return next((ti["state"] for ti in tis if ti["task_id"] == task_id), None)


def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_stop_ends_a_long_session_through_its_teardown(
    api: Api, stack: Stack, nvfl: tuple[Nvfl, dict[str, str]], tmp_path: Path
) -> None:
    session, env = nvfl
    before = stack.balances()
    conf = stack.conf(rounds=500, session_timeout=60)
    run = session("run", "--conf", _conf_file(tmp_path, conf))
    assert run.returncode == 0, run.stderr
    run_id = _run_id(run.stdout)
    _until(lambda: _task_state(api, run_id, "wait_for_rounds") == "deferred", 300, "rounds never waited for")
    _until(lambda: len((api.client.live_rounds(DAG, run_id) or {}).get("rounds") or []) >= 1, 120, "no round")
    live = session("status", run_id)
    assert f"run {run_id} of {DAG}: running" in live.stdout and "rounds: " in live.stdout, live.stderr
    assert " of 500" in live.stdout and "  round 0: accuracy " in live.stdout  # the coordinator's, so far
    follow = subprocess.Popen(
        [str(NVFL), "session", "logs", run_id, "--task", "wait_for_rounds", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        stop = session("stop", run_id)
        assert stop.returncode == 0, stop.stderr
        (stopped,) = [line for line in stop.stdout.splitlines() if line.startswith(f"run {run_id} stopped: ")]
        # The running wait, and the step not scheduled yet.
        assert set(stopped.split(": ", 1)[1].removesuffix(" marked failed").split(", ")) == {
            "wait_for_rounds",
            "publish_model",
        }
        # The teardown runs: it stops the workloads, then waits for the refunds' time-out.
        _until(lambda: _task_state(api, run_id, "teardown") in ("deferred", "success"), 120, "no teardown")
        assert {w["name"] for w in api.client.xcom(DAG, run_id, "teardown", key="stopped")} == {
            "coordinator",
            "provider-1",
            "provider-2",
            "provider-3",
        }
        assert api.client.run(DAG, run_id)["note"] == "stopped with `nvfl session stop`"
        ended = api.client.wait_run(DAG, run_id, timeout=400)
        followed, follow_err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert ended["state"] == "failed"
    assert follow.returncode == 0, follow_err
    assert followed.startswith("==> wait_for_rounds try 1 ") and "round 0 finished" in followed
    lines = [line for line in followed.splitlines() if line.strip()]
    assert len(lines) == len(set(lines))  # a state change of the task printed nothing again

    status = json.loads(session("status", run_id, "--json").stdout)
    assert status["tasks"]["wait_for_rounds"] == "failed" and status["tasks"]["teardown"] == "success"
    assert status["tasks"]["publish_model"] == "failed"
    teardown = status["teardown"]
    assert set(teardown["refunds"]) == {p["name"] for p in status["payments"]}
    assert all(r["outcome"] == "refunded" for r in teardown["refunds"].values())
    assert stack.balances() == before  # every token back, nobody paid
    again = session("stop", run_id)
    assert again.returncode == 2 and "already ended (failed)" in again.stderr
    _assert_clean(stack, api, run.stdout, live.stdout, stop.stdout, followed, json.dumps(status))


def test_stop_right_after_run_refunds_whatever_was_locked(
    api: Api, stack: Stack, nvfl: tuple[Nvfl, dict[str, str]], tmp_path: Path
) -> None:
    """Stopped as its first steps run: those running are let finish (a lock killed mid-transaction would
    leave a payment the teardown does not know), the rest fail; whatever was locked is refunded."""
    session, _ = nvfl
    before = stack.balances()
    run = session("run", "--conf", _conf_file(tmp_path, stack.conf(session_timeout=40)))
    assert run.returncode == 0, run.stderr
    run_id = _run_id(run.stdout)
    try:
        stop = session("stop", run_id, "--wait", timeout=400)
    finally:  # a stop that failed must not leave a session paying during the next tests on this stack
        ended = api.client.wait_run(DAG, run_id, timeout=400)
    assert stop.returncode == 0, stop.stderr
    assert f"run {run_id} stopped: " in stop.stdout, stop.stdout
    assert ended["state"] == "failed"
    states = {ti["task_id"]: ti["state"] for ti in api.client.task_instances(DAG, run_id)}
    assert states["publish_model"] in ("failed", "upstream_failed")
    # skipped or upstream_failed: stopped before any lock succeeded (Airflow's rule for a teardown)
    assert states["teardown"] in ("success", "skipped", "upstream_failed")
    assert stack.balances() == before  # what was locked is refunded, nothing stranded
