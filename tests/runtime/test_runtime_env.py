"""The FL runtime venv: built from the pinned requirements, idempotent, and apart from Airflow's env."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from airflow_nevermined_fl import runtime_env


def test_warm_install_is_a_no_op(fl_python: Path) -> None:
    stamp = runtime_env.venv_dir() / runtime_env.STAMP_NAME
    before = stamp.stat().st_mtime_ns
    result = runtime_env.install()
    assert result["changed"] is False and stamp.stat().st_mtime_ns == before
    assert runtime_env.is_current() and fl_python == runtime_env.runtime_python()


def test_pins_are_installed_and_envs_are_separate(fl_python: Path) -> None:
    script = (
        "import json, sys, importlib.util as u, importlib.metadata as m\n"
        "print(json.dumps({'prefix': sys.prefix, 'airflow': u.find_spec('airflow') is not None,\n"
        "  'versions': {p: m.version(p) for p in ('xain-fl', 'xain-sdk', 'protobuf')}}))"
    )
    info = json.loads(
        subprocess.run([str(fl_python), "-c", script], capture_output=True, text=True, check=True).stdout
    )
    assert info["prefix"] != sys.prefix and not info["airflow"]
    assert info["versions"]["xain-fl"] == "0.6.0" and info["versions"]["protobuf"] == "3.20.3"
    assert importlib.util.find_spec("xain_fl") is None and importlib.util.find_spec("xain_sdk") is None


def test_nodeps_line_lists_the_xain_packages() -> None:
    assert runtime_env.nodeps_packages() == ["xain-fl==0.6.0", "xain-proto==0.6.0", "xain-sdk==0.6.0"]
