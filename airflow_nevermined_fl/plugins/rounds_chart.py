"""The plugin: an "FL rounds" tab on every DAG run page of the Airflow UI, backed by a FastAPI app.

Registered in the provider info (``plugins``); Airflow loads provider plugins where ``[core]
lazy_discover_providers`` is False. Every Airflow process imports this class (task processes too, for
their macros), so it stays light: the app (``plugins/app.py``, on Airflow's API and auth modules) is
imported by the api-server at its first request.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from airflow.sdk.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

URL_PREFIX = "/nevermined-fl"
"""Where the api-server mounts the app (relative to its base URL)."""


class DeferredApp:
    """The ASGI app ``app`` of ``module``, imported on the first request."""

    def __init__(self, module: str) -> None:
        self.module = module

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await import_module(self.module).app(scope, receive, send)


class RoundsChartPlugin(AirflowPlugin):
    """The rounds chart: the page and its JSON under :data:`URL_PREFIX`, shown as a DAG run tab."""

    name = "nevermined_fl_rounds"
    fastapi_apps = [
        {
            "app": DeferredApp("airflow_nevermined_fl.plugins.app"),
            "url_prefix": URL_PREFIX,
            "name": "Nevermined FL rounds",
        }
    ]
    external_views = [
        {
            "name": "FL rounds",
            # Relative to the UI's base URL; the UI fills in the run's ids.
            "href": f"{URL_PREFIX.lstrip('/')}/rounds?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "fl-rounds",
        }
    ]
