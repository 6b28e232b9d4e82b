"""FL runtime services (coordinator, participant) on xain-fl 0.6.

Runs only in the FL runtime venv (``nvfl runtime install``); Airflow-side code never imports this package.
"""
