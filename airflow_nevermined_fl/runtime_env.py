"""The FL runtime virtualenv (``nvfl runtime install``): xain-fl services, kept apart from Airflow's env.

The venv lives at ``<project>/.venv-fl`` (override: ``$NVFL_RUNTIME_VENV``). It gets the pinned working set of
``docker/runtime/requirements.txt``, the packages named on that file's ``# NO-DEPS:`` line (xain's own, whose
declared pins cannot install on Python 3.11) with ``--no-deps``, and this project, editable and ``--no-deps``.
A stamp keyed by the requirements file's hash makes a warm install a no-op.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from airflow_nevermined_fl.paths import PROJECT_DIR

REQUIREMENTS = PROJECT_DIR / "docker" / "runtime" / "requirements.txt"
NO_DEPS_MARKER = "# NO-DEPS:"
STAMP_NAME = ".nvfl-runtime-stamp"


def venv_dir() -> Path:
    """Where the runtime venv is (``$NVFL_RUNTIME_VENV`` or ``<project>/.venv-fl``)."""
    return Path(os.environ.get("NVFL_RUNTIME_VENV") or PROJECT_DIR / ".venv-fl")


def runtime_python() -> Path:
    """The runtime venv's interpreter, for launchers; raises if the venv is not installed."""
    python = venv_dir() / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"FL runtime venv missing at {venv_dir()}: run `nvfl runtime install`")
    return python


def nodeps_packages(requirements: Path = REQUIREMENTS) -> list[str]:
    """Requirement specifiers listed on the ``# NO-DEPS:`` line of the requirements file."""
    for line in requirements.read_text().splitlines():
        if line.startswith(NO_DEPS_MARKER):
            return line[len(NO_DEPS_MARKER) :].split()
    return []


def _fingerprint() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()


def is_current() -> bool:
    """True when the venv exists and was built from the current requirements file."""
    stamp = venv_dir() / STAMP_NAME
    return (
        stamp.exists()
        and stamp.read_text().strip() == _fingerprint()
        and (venv_dir() / "bin/python").exists()
    )


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True
    )


def install(force: bool = False) -> dict[str, str | bool]:
    """Build (or refresh) the runtime venv; a no-op when its stamp matches the requirements file."""
    target = venv_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent installers (parallel test runs) build it once
        if is_current() and not force:
            return {"venv": str(target), "python": str(runtime_python()), "changed": False}
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(target)], check=True)
        python = target / "bin" / "python"
        _pip(python, "-r", str(REQUIREMENTS))
        _pip(python, "--no-deps", *nodeps_packages())
        _pip(python, "--no-deps", "-e", str(PROJECT_DIR))
        (target / STAMP_NAME).write_text(_fingerprint() + "\n")
    return {"venv": str(target), "python": str(python), "changed": True}
