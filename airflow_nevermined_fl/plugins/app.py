"""The rounds chart's FastAPI app, mounted by the api-server under ``URL_PREFIX``.

Plugin apps are not behind Airflow's auth by themselves: every route here depends on Airflow's own
``get_user`` (the JWT of an ``Authorization: Bearer`` header, else of the UI's ``_token`` cookie: an
anonymous request gets 401, an invalid token 403), and the run's routes on ``requires_access_dag`` (read
access to the DAG's runs, and to its XComs for the data) with the ``dag_id`` of the query.

- ``GET rounds?dag_id=&run_id=``: the page (static HTML; it polls the JSON while the run goes on);
- ``GET rounds.js``: its script;
- ``GET rounds.json?dag_id=&run_id=``: the run's rounds (:func:`~.rounds.run_rounds`);
- ``GET model-ddo?dag_id=&run_id=``: the DDO of the model the run published
  (:func:`~.model_ddo.run_model_ddo`), the target of ``publish_model``'s ``Model DDO`` extra link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag, requires_authenticated
from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.responses import FileResponse

from airflow_nevermined_fl.plugins.model_ddo import run_model_ddo
from airflow_nevermined_fl.plugins.rounds import run_rounds

STATIC = Path(__file__).with_name("static")
# Everything the page loads comes from here; it is framed by the Airflow UI of the same origin.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'self'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

app = FastAPI(
    title="Nevermined FL rounds",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    dependencies=[Depends(requires_authenticated())],
)


@app.get("/rounds", dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
def page() -> FileResponse:
    return FileResponse(STATIC / "rounds.html", media_type="text/html", headers=PAGE_HEADERS)


@app.get("/rounds.js")
def script() -> FileResponse:
    return FileResponse(STATIC / "rounds.js", media_type="text/javascript", headers=PAGE_HEADERS)


# A run's data: read access to its runs and XComs, as the core API's run and XCom routes ask.
RUN_DATA = [
    Depends(requires_access_dag("GET", DagAccessEntity.RUN)),
    Depends(requires_access_dag("GET", DagAccessEntity.XCOM)),
]


def _answer(data: dict[str, Any] | None, missing: str, response: Response) -> dict[str, Any]:
    if data is None:
        raise HTTPException(404, missing)
    response.headers["Cache-Control"] = "no-store"
    return data


@app.get("/rounds.json", dependencies=RUN_DATA)
def rounds(dag_id: str, run_id: str, session: SessionDep, response: Response) -> dict[str, Any]:
    data = run_rounds(session, dag_id, run_id)
    return _answer(data, f"no run {run_id!r} of DAG {dag_id!r}", response)


@app.get("/model-ddo", dependencies=RUN_DATA)
def model_ddo(dag_id: str, run_id: str, session: SessionDep, response: Response) -> dict[str, Any]:
    ddo = run_model_ddo(session, dag_id, run_id)
    return _answer(ddo, f"run {run_id!r} of DAG {dag_id!r} published no model", response)
