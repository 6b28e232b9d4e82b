"""Where the project keeps local state (devstack, runtime venv) and caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent


def state_dir() -> Path:
    """Local state: ``$NVFL_HOME``; else ``<checkout>/.nvfl`` (git-ignored) when running from a source
    checkout, or ``$XDG_STATE_HOME/airflow-nevermined-fl`` for an installed package."""
    if os.environ.get("NVFL_HOME"):
        path = Path(os.environ["NVFL_HOME"])
    elif (PROJECT_DIR / "pyproject.toml").exists():
        path = PROJECT_DIR / ".nvfl"
    else:
        xdg = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        path = xdg / "airflow-nevermined-fl"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Build caches shared by all state dirs: ``$NVFL_CACHE`` or ``$XDG_CACHE_HOME/airflow-nevermined-fl``."""
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(os.environ.get("NVFL_CACHE") or xdg / "airflow-nevermined-fl")
    path.mkdir(parents=True, exist_ok=True)
    return path
