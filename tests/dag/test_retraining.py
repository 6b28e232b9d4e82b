"""Scheduled retraining DAG: each run warm-starts from the last model the same DAG published (the newest
event of its model asset)."""

from __future__ import annotations

from pathlib import Path

from dagstack import Stack
from test_session_dag import model_event


def test_retraining_warm_starts_from_its_last_model(stack: Stack, tmp_path: Path) -> None:
    first, _ = stack.dag_test(stack.conf(), tmp_path / "first.json", dag_id="fl_retraining")
    second, output = stack.dag_test(stack.conf(), tmp_path / "second.json", dag_id="fl_retraining")
    assert first["state"] == second["state"] == "success"
    for run in (first, second):  # each session announces its model: one event of the DAG's model asset
        assert run["asset_events"] == [model_event(run, "fl_retraining")]
    first_session = first["xcom"]["validate"]["session"]
    second_session = second["xcom"]["validate"]["session"]
    assert first_session["conf"]["initial_model"] is None  # no event of this DAG's model asset yet
    published = first["asset_events"][0]["extra"]["model_did"]
    assert second_session["conf"]["initial_model"] == published
    assert f"warm start from {published}" in output
    first_rounds = first["xcom"]["wait_for_rounds"]["return_value"]["rounds_metrics"]
    second_rounds = second["xcom"]["wait_for_rounds"]["return_value"]["rounds_metrics"]
    assert second_rounds[0]["accuracy"] > first_rounds[0]["accuracy"]  # round 0 starts from trained weights
