"""Where FL workloads run. Operators get a launcher by backend name and never branch on it."""

from __future__ import annotations

import importlib

from airflow_nevermined_fl.gateway.launchers.base import (
    Labels,
    Launcher,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
)

# backend name -> "module:Class"; the Docker and Kubernetes backends register here when they land.
BACKENDS: dict[str, str] = {
    "local": "airflow_nevermined_fl.gateway.launchers.local:LocalLauncher",
    "docker": "airflow_nevermined_fl.gateway.launchers.docker:DockerLauncher",
    "kubernetes": "airflow_nevermined_fl.gateway.launchers.kubernetes:KubernetesLauncher",
}

__all__ = ["BACKENDS", "Labels", "Launcher", "Workload", "WorkloadSpec", "WorkloadStatus", "get_launcher"]


def get_launcher(backend: str, conn_id: str | None = None) -> Launcher:
    """The launcher for ``backend`` (``conn_id``: its connection, e.g. a cluster; unused locally)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not available here (available: {sorted(BACKENDS)})")
    module, cls = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), cls)(conn_id=conn_id)
