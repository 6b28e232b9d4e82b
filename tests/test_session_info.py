"""``stop_session``'s logic against a run as the REST API shows it right after a trigger, on a busy
database (a fake client: the real one is driven in tests/dag/test_session_cli.py)."""

from __future__ import annotations

from typing import Any

from airflow_nevermined_fl.client import AirflowApiError
from airflow_nevermined_fl.session_info import stop_session

TASKS = [
    {"task_id": "validate", "trigger_rule": "all_success", "is_mapped": False},
    {"task_id": "lock_payment", "trigger_rule": "all_success", "is_mapped": True},
    {"task_id": "teardown", "trigger_rule": "all_done_setup_success", "is_mapped": False},
]
TASKS = [t | {"operator_name": "Operator"} for t in TASKS]


class JustTriggeredRun:
    """A run whose task instances the scheduler creates only at the third look."""

    def __init__(self) -> None:
        self.looks = self.notes = 0
        self.states: dict[tuple[str, int], str | None] = {
            ("validate", -1): "running",
            ("lock_payment", -1): None,  # not expanded yet
            ("teardown", -1): None,
        }

    def tasks(self, dag_id: str) -> list[dict[str, Any]]:
        return TASKS

    def note_run(self, dag_id: str, run_id: str, note: str) -> None:
        self.notes += 1
        if self.notes == 1:  # what a busy SQLite answered in CI
            raise AirflowApiError("patch_dag_run", 500, {"reason": "Database error"})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        self.looks += 1
        if self.looks < 3:
            return []
        if self.looks == 4:  # the running step ended by itself, the mapped one expanded
            self.states[("validate", -1)] = "success"
            del self.states[("lock_payment", -1)]
            self.states[("lock_payment", 0)] = None
        return [{"task_id": t, "map_index": i, "state": s} for (t, i), s in self.states.items()]

    def fail_task(self, dag_id: str, run_id: str, task_id: str, map_index: int, note: str) -> None:
        self.states[(task_id, map_index)] = "failed"


def test_stop_waits_for_the_task_instances_of_a_run_just_triggered() -> None:
    """Not "nothing to stop" when the scheduler has not created them yet, nor a failure when the note meets a
    busy database; a running step is let finish, a mapped step is failed once expanded, the teardown is left
    to run."""
    run = JustTriggeredRun()
    assert stop_session(run, "fl_session", "r", timeout=30) == ["lock_payment[0]"]  # type: ignore[arg-type]
    assert run.states[("teardown", -1)] is None and run.notes == 2
