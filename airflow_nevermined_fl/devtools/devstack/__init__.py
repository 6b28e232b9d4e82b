"""The embedded default stack (``nvfl devstack up|down|status``).

Each component is a module of this package exposing::

    up(home: Path, previous: dict | None, **options) -> dict  # start, or reuse ``previous`` when alive
    alive(state: dict) -> bool
    down(state: dict) -> None                                  # stop only what ``up`` started
    public(state: dict) -> dict                                # status fields; never secrets

The stack's state (pids, ports, private files) lives in ``<state dir>/devstack/state.json`` (mode 0600).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from airflow_nevermined_fl.paths import state_dir

COMPONENTS: tuple[str, ...] = ("chain", "s3", "gateways", "airflow")


def home() -> Path:
    path = state_dir() / "devstack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_file() -> Path:
    return home() / "state.json"


def load_state() -> dict[str, dict[str, Any]]:
    path = _state_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(state: dict[str, dict[str, Any]]) -> None:
    path = _state_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _component(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def up(backend: str | None = None) -> dict[str, Any]:
    """Start every component (reusing live ones) and return the public status.

    ``backend``: where the gateways run workloads (``local``/``docker``); gateways running another
    backend restart. Default: the running gateways' backend, else ``local``."""
    state = load_state()
    options: dict[str, dict[str, Any]] = {"gateways": {"backend": backend}}
    for name in COMPONENTS:
        state[name] = _component(name).up(home(), state.get(name), **options.get(name, {}))
        _save_state(state)
    return status()


def down() -> None:
    """Stop every component ``up`` started, in reverse order."""
    state = load_state()
    for name in reversed(COMPONENTS):
        if name in state:
            _component(name).down(state.pop(name))
            _save_state(state)


def status() -> dict[str, Any]:
    """Public status: ``running`` plus each live component's fields."""
    state = load_state()
    result: dict[str, Any] = {"state_dir": str(home())}
    running = []
    for name in COMPONENTS:
        module = _component(name)
        if name in state and module.alive(state[name]):
            running.append(name)
            result.update(module.public(state[name]))
    result["running"] = running
    return result
