"""The real Kubernetes cluster the cluster tests use (``NVFL_TEST_KUBECONFIG``; see docs/kubernetes.md):
skip marks, the connection settings from the environment, and a SeaweedFS bound where the pods reach it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

KUBECONFIG = os.environ.get("NVFL_TEST_KUBECONFIG")
HOST_IP = os.environ.get("NVFL_TEST_K8S_HOST_IP")

# A test module's ``pytestmark``: needs a cluster (``k8s``, out of the fast tier); skip (with the reason)
# unless one is configured.
REQUIRED = [
    pytest.mark.k8s,
    pytest.mark.skipif(
        not KUBECONFIG,
        reason="no Kubernetes cluster: set NVFL_TEST_KUBECONFIG (kind or k3s, see docs/kubernetes.md)",
    ),
    pytest.mark.skipif(
        bool(KUBECONFIG) and not HOST_IP,
        reason="NVFL_TEST_K8S_HOST_IP not set: the address of this machine as the cluster's pods see it",
    ),
]


def connection_extra(**nvfl: Any) -> dict[str, Any]:
    """``extra`` of a ``kubernetes`` connection to the cluster, with these ``nvfl`` settings."""
    extra: dict[str, Any] = {
        "kube_config_path": KUBECONFIG,
        "namespace": os.environ.get("NVFL_TEST_K8S_NAMESPACE") or "default",
        "nvfl": {"service_type": os.environ.get("NVFL_TEST_K8S_SERVICE_TYPE") or "NodePort", **nvfl},
    }
    if os.environ.get("NVFL_TEST_K8S_CONTEXT"):
        extra["cluster_context"] = os.environ["NVFL_TEST_K8S_CONTEXT"]
    return extra


@contextmanager
def seaweed(home: Path) -> Iterator[dict[str, Any]]:
    """The devstack SeaweedFS, bound to the address the pods reach (instead of 127.0.0.1)."""
    from airflow_nevermined_fl.devtools.devstack import s3

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(s3, "HOST", HOST_IP)
        state = s3.up(home, None)
    try:
        yield state
    finally:
        s3.down(state)
