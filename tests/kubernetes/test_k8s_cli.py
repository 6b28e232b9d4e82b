"""``nvfl kubernetes check`` (a provider validates its connection) and ``nvfl kubernetes cleanup``
(delete what a run left when its teardown never ran)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apiserver import FakeApiServer
from k8s_specs import FULL_CONFIG, coordinator_spec, participant_spec

from airflow_nevermined_fl.devtools.cli import main
from airflow_nevermined_fl.gateway.launchers import get_launcher


def _json(out: str) -> dict:
    """The JSON document printed by ``--json`` (log lines may precede it)."""
    return json.loads(out[out.index("{\n") :])


def test_check_good_and_bad(k8s_conn: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    good = k8s_conn("nvfl_k8s_good", namespace="fl", nvfl=FULL_CONFIG)
    assert main(["kubernetes", "check", "--conn-id", good, "--json"]) == 0
    shown = _json(capsys.readouterr().out)
    assert shown["namespace"] == "fl" and shown["service_type"] == "NodePort"
    bad = k8s_conn("nvfl_k8s_bad", nvfl={"service_type": "Ingress"})
    assert main(["kubernetes", "check", "--conn-id", bad]) == 2
    err = capsys.readouterr().err
    assert "kubernetes connection 'nvfl_k8s_bad': extra.nvfl.service_type: 'Ingress' is not one of" in err


def test_cleanup_deletes_the_run(
    tmp_path: Path, k8s_conn: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeApiServer() as api:
        conn_id = k8s_conn(kube_config_path=str(api.kubeconfig(tmp_path / "kc.json")), namespace="fl")
        launcher = get_launcher("kubernetes", conn_id)
        coord = launcher.start(coordinator_spec())
        part = launcher.start(participant_spec("s3://nvfl/p.npz"))
        dag_id, run_id = coord.labels.dag_id, coord.labels.run_id
        assert main(["kubernetes", "cleanup", "--conn-id", conn_id, "--dag-id", dag_id]) == 2
        assert "--dag-id and --run-id are required" in capsys.readouterr().err
        assert api.objects  # nothing deleted by the refused call
        argv = [
            "kubernetes",
            "cleanup",
            "--conn-id",
            conn_id,
            "--dag-id",
            dag_id,
            "--run-id",
            run_id,
            "--json",
        ]
        assert main(argv) == 0
        assert sorted(_json(capsys.readouterr().out)["stopped"]) == sorted([coord.id, part.id])
        assert not api.objects
