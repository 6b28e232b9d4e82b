"""Operators: one per step of an FL session (see ``airflow_nevermined_fl.dag_factory``)."""
