"""The Docker engine of the Docker tests: ``$DOCKER_HOST``, else the local socket.

Without an engine those tests skip with the reason; where one is required (``NVFL_REQUIRE_DOCKER=1``,
set by ``.ci/run``, which starts a dockerd) a missing engine fails them instead.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from airflow_nevermined_fl.devtools import images


def engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def engine_or_skip() -> Any:
    """A pinged client of the engine; skip (or fail where required) when none answers."""
    from docker.errors import DockerException

    try:
        client = images.local_engine()
        client.ping()
    except (DockerException, OSError) as exc:
        reason = f"no Docker engine at {engine_url()} (set DOCKER_HOST; .ci/run starts one): {exc}"
        if os.environ.get("NVFL_REQUIRE_DOCKER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return client
