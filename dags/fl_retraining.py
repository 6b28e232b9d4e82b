"""Scheduled retraining: a daily session warm-started from the last model this DAG published.

Created paused: unpause it (UI or ``PATCH /api/v2/dags/fl_retraining``) to start the schedule.
"""

from airflow_nevermined_fl.dag_factory import fl_session_dag

dag = fl_session_dag("fl_retraining", schedule="@daily", warm_start=True, is_paused_upon_creation=True)
