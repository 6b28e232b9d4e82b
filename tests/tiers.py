"""Test tiers: each test is marked with what it needs (``chain``, ``s3``, ``airflow``, ``docker``, ``k8s``,
``browser``, ``runtime``), from the fixtures it uses (their whole closure) or an explicit mark. A test with
none of these marks is in the fast tier (``make test-fast``): it needs no service, no FL venv, no Node.
While such a test sets up and runs, the entry points that start a service raise :class:`Unmarked`, so a
test that needs a service but is not marked fails naming the mark to add instead of passing by accident."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

NEEDS = ("chain", "s3", "airflow", "docker", "browser", "k8s", "runtime")
"""The marks of what a test needs (registered, with what each means, in ``pyproject.toml``)."""

SERVICE_FIXTURES: dict[str, tuple[str, ...]] = {
    "tests::seaweed": ("s3",),
    "tests::browser": ("browser",),
    "tests/chain::devchain": ("chain",),
    "tests/chain/test_chain_bounded.py::unmined_chain": ("chain",),
    "tests/dag::stack": ("chain", "s3", "airflow", "runtime"),
    "tests/dag::api": ("airflow",),
    "tests/dag/test_log_follow.py::lagging": ("chain",),  # its hooks read the compiled contracts' ABIs
    "tests/dag/test_provider.py::serve": ("chain",),  # idem
    "tests/dag/test_triggers.py::serve": ("chain",),  # idem
    "tests/dag/test_session_dag_docker.py::engine": ("docker",),
    "tests/docker::engine": ("docker",),
    "tests/docker::local_launcher": ("runtime",),
    "tests/docker/test_compose.py::config": ("docker",),
    "tests/gateway::gw_chain": ("chain",),
    "tests/gateway::coordinator_gw": ("runtime",),
    "tests/gateway::data_gw": ("runtime",),
    "tests/kubernetes/test_k8s_gateway.py::devchain": ("chain",),
    "tests/runtime::fl_python": ("runtime",),
}
"""``<where the fixture is defined>::<name>`` of the fixtures that start a service, and what they need; every
test using one (directly or through other fixtures) gets these marks."""

ENTRY_POINTS: dict[str, str] = {
    "airflow_nevermined_fl.contracts.compile:compile_contracts": "chain",
    "airflow_nevermined_fl.contracts.compile:anvil_binary": "chain",
    "airflow_nevermined_fl.devtools.devstack.s3:weed_binary": "s3",
    "airflow_nevermined_fl.devtools.devstack.airflow:start": "airflow",
    "airflow_nevermined_fl.runtime_env:install": "runtime",
    "airflow_nevermined_fl.runtime_env:runtime_python": "runtime",
    "airflow_nevermined_fl.devtools.images:build_all": "docker",
    "browser:chromium": "browser",
}
"""``module:function`` that starts (or needs) a service: refused while a fast-tier test runs."""


class Unmarked(RuntimeError):
    """A fast-tier test reached a service: it must carry the mark named in the message."""


def needs(item: pytest.Item) -> set[str]:
    """What ``item`` needs: its explicit marks plus those of the service fixtures in its closure."""
    found = {mark.name for mark in item.iter_markers() if mark.name in NEEDS}
    definitions = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixture in definitions.name2fixturedefs.get(name, ()) if definitions else ():
            found.update(SERVICE_FIXTURES.get(f"{fixture.baseid}::{name}", ()))
    return found


def classify(items: list[pytest.Item]) -> None:
    """Add the marks of :func:`needs` to every collected test."""
    for item in items:
        for name in sorted(needs(item) - {mark.name for mark in item.iter_markers()}):
            item.add_marker(name)


RUNNING: dict[str, pytest.Item] = {}
"""``{"fast": item}`` while a fast-tier test sets up or runs."""


def _refusing(function: Callable[..., Any], target: str, need: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def refusing(*args: Any, **kwargs: Any) -> Any:
        if (item := RUNNING.get("fast")) is not None:
            raise Unmarked(
                f"{item.nodeid} is in the fast tier but calls {target}, which needs `{need}`: "
                f"mark it @pytest.mark.{need} (or use a fixture that does)"
            )
        return function(*args, **kwargs)

    return refusing


def install() -> None:
    """Wrap the :data:`ENTRY_POINTS` once, before any test module is imported: they raise :class:`Unmarked`
    while a fast-tier test runs (a wrapper, not a patch per test, so a test's own monkeypatch restores it)."""
    for target, need in ENTRY_POINTS.items():
        module_name, name = target.split(":")
        module = importlib.import_module(module_name)
        setattr(module, name, _refusing(getattr(module, name), target, need))


@contextmanager
def guarded(item: pytest.Item) -> Iterator[None]:
    """Mark ``item`` as running for the wrapped entry points when it is in the fast tier."""
    if not any(mark.name in NEEDS for mark in item.iter_markers()):
        RUNNING["fast"] = item
    try:
        yield
    finally:
        RUNNING.pop("fast", None)
