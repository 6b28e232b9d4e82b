"""Shared pytest setup: every test runs with its own state dir so it never touches a user's devstack;
one real SeaweedFS (free ports) and one headless browser (``browser.py``) for the whole test session; every
test marked with what it needs, and a fast-tier test kept from reaching a service (``tiers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import tiers

if TYPE_CHECKING:
    from browser import Screenshots
    from playwright.sync_api import Browser


def pytest_configure() -> None:
    tiers.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.classify(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with tiers.guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with tiers.guarded(item):
        return (yield)


@pytest.fixture(autouse=True, scope="session")
def _isolated_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    import os

    os.environ["NVFL_HOME"] = str(Path(tmp_path_factory.mktemp("nvfl-home")))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The devstack SeaweedFS component on 127.0.0.1, started once, stopped by pid at the end."""
    from airflow_nevermined_fl.devtools.devstack import s3

    state = s3.up(tmp_path_factory.mktemp("seaweed"), None)
    try:
        yield state
    finally:
        s3.down(state)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium through Playwright (skips without it, unless NVFL_REQUIRE_BROWSER=1)."""
    from browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def screenshots(tmp_path: Path, request: pytest.FixtureRequest) -> Screenshots:
    """This test's screenshots: in its tmp dir (and ``$NVFL_ARTIFACTS/<test>/``)."""
    from browser import Screenshots

    return Screenshots(tmp_path, request.node.name)
