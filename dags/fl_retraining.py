"""Scheduled retraining: a daily session warm-started from the last model this DAG published.

Created paused: unpause it (UI or ``PATCH /api/v2/dags/fl_retraining``) to start the schedule. A schedule
needs valid default providers: this DAG exists only where ``NVFL_SESSION_PROVIDERS`` names them (JSON
``{"coordinator": {"did"}, "data_providers": [{"did"}, ...]}``; the embedded stack sets it).
"""

import json
import os

from airflow_nevermined_fl.dag_factory import fl_session_dag

if os.environ.get("NVFL_SESSION_PROVIDERS"):
    dag = fl_session_dag(
        "fl_retraining",
        schedule="@daily",
        warm_start=True,
        is_paused_upon_creation=True,
        params=json.loads(os.environ["NVFL_SESSION_PROVIDERS"]),
        consumer_pool=os.environ.get("NVFL_CONSUMER_POOL"),
    )
