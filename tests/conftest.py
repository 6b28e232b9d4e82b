"""Shared pytest setup: every test runs with its own state dir so it never touches a user's devstack."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    import os

    os.environ["NVFL_HOME"] = str(Path(tmp_path_factory.mktemp("nvfl-home")))
