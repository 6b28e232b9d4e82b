"""One FL session per run: trigger from the UI form, over REST with a ``conf``, or ``nvfl demo``.

Default providers (asset DIDs) come from ``NVFL_SESSION_PROVIDERS`` (JSON ``{"coordinator": {"did"},
"data_providers": [{"did"}, ...]}``; the embedded stack sets it); a run's conf may name others. With
workers on several hosts, ``NVFL_CONSUMER_POOL`` names the consumer account's one-slot pool (the compose
stack creates and sets it).
"""

import json
import os

from airflow_nevermined_fl.dag_factory import fl_session_dag

dag = fl_session_dag(
    "fl_session",
    params=json.loads(os.environ.get("NVFL_SESSION_PROVIDERS") or "{}"),
    consumer_pool=os.environ.get("NVFL_CONSUMER_POOL"),
)
