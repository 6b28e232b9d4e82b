"""The provider's Airflow UI plugin: a live chart of a session's rounds on its DAG run page (docs/ui.md)."""
