"""Local-process launcher with real processes (the FL venv's python): idempotent start, labels found and
stopped from another process, exit codes, logs, and secrets kept out of records and inherited env."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagstack import process_gone

from airflow_nevermined_fl import process
from airflow_nevermined_fl.gateway.launchers import Labels, WorkloadSpec, get_launcher
from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher

SECRET = "s3cr3t-value-never-recorded"


def _labels(run_id: str, name: str) -> Labels:
    return Labels(dag_id="launcher_test", run_id=run_id, task_id="start", role="participant", name=name)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.runtime
def test_start_find_stop_from_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SHOULD_NOT_LEAK", "postgres://user:pw@host/db")
    launcher = get_launcher("local")
    port = launcher.free_port()
    spec = WorkloadSpec(
        labels=_labels("run-1", "web"),
        module="http.server",
        args=["--bind", "127.0.0.1", "--directory", "{workdir}", str(port)],
        ports={"http": port},
        files={"note.txt": "hello"},
        env={"PUBLIC_SETTING": "1"},
        secret_env={"SECRET_TOKEN": SECRET},
    )
    workload = launcher.start(spec)
    process.wait_port("127.0.0.1", port, 30, pid=int(workload.details["pid"]))
    assert workload.endpoints == {"http": f"127.0.0.1:{port}"}
    assert launcher.start(spec).id == workload.id  # a retried start reuses the running workload
    assert launcher.status(workload).running

    (python,) = (
        Path(f"/proc/{workload.details['pid']}/task/{workload.details['pid']}/children").read_text().split()
    )
    env = _environ(int(python))
    assert env["SECRET_TOKEN"] == SECRET and env["PUBLIC_SETTING"] == "1"
    assert "AIRFLOW_CONN_SHOULD_NOT_LEAK" not in env
    record = Path(workload.details["dir"], "workload.json").read_text()
    assert SECRET not in record and json.loads(record)["details"]["env"] == {"PUBLIC_SETTING": "1"}

    code = (
        "from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher;"
        "print([w.labels.name for w in LocalLauncher().stop_run('launcher_test', 'run-1')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['web']"
    assert not launcher.status(workload).running
    assert process_gone(int(python)) and not process.port_open("127.0.0.1", port)
    assert launcher.find("launcher_test", "other-run") == []


@pytest.mark.runtime
def test_exit_code_and_logs_of_a_finished_workload() -> None:
    launcher = LocalLauncher()
    workload = launcher.start(
        WorkloadSpec(labels=_labels("run-2", "bad"), module="json.tool", args=["{workdir}/missing.json"])
    )
    deadline = time.monotonic() + 30
    while launcher.status(workload).running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert launcher.status(workload).exit_code == 2  # json.tool: file not found
    assert "missing.json" in launcher.logs(workload)
    restarted = launcher.start(
        WorkloadSpec(labels=_labels("run-2", "bad"), module="json.tool", args=["{workdir}/missing.json"])
    )
    assert restarted.id != workload.id  # an ended workload is started again, not reused
    launcher.stop_run("launcher_test", "run-2")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend: 'cloud' is not available"):
        get_launcher("cloud")


@pytest.mark.runtime
def test_dataset_and_secret_files(tmp_path: Path) -> None:
    """``{dataset}`` is the spec's dataset; secret files are the workload's alone and never recorded."""
    dataset = tmp_path / "shard.json"
    dataset.write_text('{"rows": 3}')
    launcher = LocalLauncher(root=tmp_path / "workloads")
    spec = WorkloadSpec(
        labels=_labels("run-3", "reader"),
        module="json.tool",
        args=["{dataset}"],
        dataset=str(dataset),
        secret_files={"token": SECRET},
    )
    workload = launcher.start(spec)
    deadline = time.monotonic() + 30
    while launcher.status(workload).running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert launcher.status(workload).exit_code == 0 and '"rows": 3' in launcher.logs(workload)
    token = Path(workload.details["dir"], "token")
    assert token.read_text() == SECRET and token.stat().st_mode & 0o777 == 0o600
    assert SECRET not in Path(workload.details["dir"], "workload.json").read_text()
    with pytest.raises(ValueError, match="without a dataset"):
        launcher.start(WorkloadSpec(labels=_labels("run-3", "none"), module="json.tool", args=["{dataset}"]))
    launcher.stop_run("launcher_test", "run-3")
