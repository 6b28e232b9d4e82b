"""Kubernetes backend fixtures: Airflow ``kubernetes`` connections defined through the environment, and
the in-memory API of ``fake_apiserver`` for the launcher's call sequence."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import FakeApiServer
from k8s_specs import FULL_CONFIG


@pytest.fixture
def k8s_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define an Airflow ``kubernetes`` connection (env) with these extras; returns its id."""

    def define(conn_id: str = "nvfl_k8s_test", **extras: Any) -> str:
        uri = json.dumps({"conn_type": "kubernetes", "extra": extras})
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
        return conn_id

    return define


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def conn(api: FakeApiServer, tmp_path: Path, k8s_conn: Callable[..., str]) -> Callable[..., str]:
    """A connection to ``api`` (namespace ``fl``): ``FULL_CONFIG`` with these settings (None: left out)."""
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig.json"))

    def define(**nvfl: Any) -> str:
        settings = {k: v for k, v in {**FULL_CONFIG, **nvfl}.items() if v is not None}
        return k8s_conn(kube_config_path=kubeconfig, namespace="fl", nvfl=settings)

    return define
