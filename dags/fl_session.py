"""One FL session per run: trigger from the UI form, over REST with a ``conf``, or ``nvfl demo``."""

from airflow_nevermined_fl.dag_factory import fl_session_dag

dag = fl_session_dag("fl_session")
