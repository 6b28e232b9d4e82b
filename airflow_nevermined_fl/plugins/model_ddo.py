"""The model DDO a session run published, for its ``Model DDO`` extra link: read by the api-server from
the consumer's storage (the run's storage connection), checked against its checksum."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.plugins.rounds import run_xcoms

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def run_model_ddo(session: Session, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The DDO of the run's model (None: the run published none)."""
    from airflow_nevermined_fl.operators.base import metadata_store

    xcoms = run_xcoms(session, dag_id, run_id, ["validate", "publish_model"])
    model, setup = xcoms.get(("publish_model", "return_value")), xcoms.get(("validate", "session"))
    if not model or not setup:
        return None
    return metadata_store(setup["conf"]["storage_conn_id"]).get(model["model_did"])
