"""Scheduled retraining DAG: each run warm-starts from the last model the same DAG published."""

from __future__ import annotations

from pathlib import Path

from dagstack import Stack


def test_retraining_warm_starts_from_its_last_model(stack: Stack, tmp_path: Path) -> None:
    first, _ = stack.dag_test(stack.conf(), tmp_path / "first.json", dag_id="fl_retraining")
    second, output = stack.dag_test(stack.conf(), tmp_path / "second.json", dag_id="fl_retraining")
    assert first["state"] == second["state"] == "success"
    first_session = first["xcom"]["validate"]["session"]
    second_session = second["xcom"]["validate"]["session"]
    assert first_session["conf"]["initial_model"] is None  # nothing published by this DAG yet
    published = first["xcom"]["publish_model"]["return_value"]["model_did"]
    assert second_session["conf"]["initial_model"] == published
    assert f"warm start from {published}" in output
    first_rounds = first["xcom"]["wait_for_rounds"]["return_value"]["rounds_metrics"]
    second_rounds = second["xcom"]["wait_for_rounds"]["return_value"]["rounds_metrics"]
    assert second_rounds[0]["accuracy"] > first_rounds[0]["accuracy"]  # round 0 starts from trained weights
