"""Where the project keeps local state (devstack, runtime venv) and caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent


def state_dir() -> Path:
    """Local state: ``$NVFL_HOME`` or ``<project>/.nvfl`` (git-ignored)."""
    path = Path(os.environ.get("NVFL_HOME") or PROJECT_DIR / ".nvfl")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Build caches shared by all state dirs: ``$NVFL_CACHE`` or ``$XDG_CACHE_HOME/airflow-nevermined-fl``."""
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(os.environ.get("NVFL_CACHE") or xdg / "airflow-nevermined-fl")
    path.mkdir(parents=True, exist_ok=True)
    return path
