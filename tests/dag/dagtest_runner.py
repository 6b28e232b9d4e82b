"""Run one session DAG with ``dag.test()`` in this process and print a JSON summary on the last line.

Usage: python dagtest_runner.py DAG_ID CONF_JSON [--retry TASK_ID ...] [--summary FILE]
The caller sets AIRFLOW_HOME (migrated SQLite DB), the dags folder and the AIRFLOW_CONN_* connections.
``--retry`` re-runs the given tasks of the finished run (a new try of the same task instance), the way
an Airflow retry would, to prove that they have no second on-chain effect.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SUMMARY_PREFIX = "DAGTEST_SUMMARY "


def _xcoms(dag_id: str, run_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    out: dict[str, Any] = {}
    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id).all()
        for row in rows:
            name = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
            out.setdefault(name, {})[row.key] = XComModel.deserialize_value(row)
    return out


def _rendered(dag_id: str, run_id: str) -> dict[str, Any]:
    """Rendered template fields of every task instance of the run, as stored for the UI."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rtif
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(Rtif).filter(Rtif.dag_id == dag_id, Rtif.run_id == run_id).all()
        return {f"{r.task_id}[{r.map_index}]": r.rendered_fields for r in rows}


def _asset_events(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The asset events the run's tasks emitted, oldest first, as the metadata DB holds them."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .filter(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
            .order_by(AssetEvent.timestamp)
            .all()
        )
        return [{"uri": r.uri, "source_task_id": r.source_task_id, "extra": r.extra} for r in rows]


def _retry(dag: Any, dr: Any, task_ids: list[str]) -> dict[str, str]:
    """Run each task's instances again (next try number) and return their final states."""
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session

    states = {}
    for task_id in task_ids:
        for ti in [t for t in dr.get_task_instances() if t.task_id == task_id]:
            with create_session() as session:
                ti = session.merge(ti)
                ti.try_number += 1
                session.commit()
            _run_task(ti=ti, task=dag.task_dict[task_id], run_triggerer=True)
            states[f"{task_id}[{ti.map_index}]"] = getattr(ti.state, "value", str(ti.state))
    return states


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("conf")
    parser.add_argument("--retry", nargs="*", default=[])
    parser.add_argument(
        "--summary", help="write the full summary (XComs, rendered fields, asset events) to this JSON file"
    )
    args = parser.parse_args()
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag().get_dag(args.dag_id)
    dr = dag.test(run_conf=json.loads(args.conf))
    summary: dict[str, Any] = {
        "run_id": dr.run_id,
        "state": str(dr.state),
        "tasks": {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
            for ti in dr.get_task_instances()
        },
    }
    if args.retry:
        summary["retried"] = _retry(dag, dr, args.retry)
    summary["xcom"] = _xcoms(args.dag_id, dr.run_id)
    summary["rendered"] = _rendered(args.dag_id, dr.run_id)
    summary["asset_events"] = _asset_events(args.dag_id, dr.run_id)
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=1, default=str))
    print(SUMMARY_PREFIX + json.dumps({k: summary[k] for k in ("run_id", "state", "tasks")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
