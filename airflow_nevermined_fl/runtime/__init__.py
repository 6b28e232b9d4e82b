"""FL runtime services (coordinator, participant) on xain-fl 0.6.

Runs only in the FL runtime venv (``nvfl runtime install``); Airflow-side code imports only its standard
library modules: :mod:`.config` (the session config), :mod:`.workload` (roles, states, exit codes, command
lines) and :func:`.status.fetch` (the coordinator's status).
"""
