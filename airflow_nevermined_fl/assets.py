"""The models a session DAG publishes, as one Airflow asset per DAG: ``nevermined-fl://models/<dag_id>``.

Each successful ``publish_model`` emits an event of its DAG's asset, its ``extra`` the model's ``model_did``,
``model_url``, ``sha256``, ``final_accuracy``, ``rounds`` and ``session_id``. Downstream DAGs schedule on
:func:`model_asset`; a warm-started session starts from the newest event's model (:func:`last_model`).
The URI scheme is registered in the provider info (``asset-uris``), :func:`sanitize_uri` its normalizer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlunsplit

from airflow.sdk import Asset

if TYPE_CHECKING:
    from airflow.sdk import Context

SCHEME = "nevermined-fl"
_DAG_ID = re.compile(r"[\w.-]{1,250}")  # Airflow's DAG id alphabet and length


def model_asset(dag_id: str) -> Asset:
    """The asset of the models DAG ``dag_id`` publishes (its name is its URI)."""
    return Asset(uri=f"{SCHEME}://models/{dag_id}", group="model")


def sanitize_uri(parts: SplitResult) -> SplitResult:
    """Airflow's normalizer for ``nevermined-fl`` URIs: ``nevermined-fl://models/<dag_id>``, nothing else
    (no user info, port, query or deeper path); raises ``ValueError``."""
    if parts.netloc.lower() != "models" or parts.query or not _DAG_ID.fullmatch(parts.path[1:]):
        raise ValueError(f"expected {SCHEME}://models/<dag_id>, got {urlunsplit(parts)!r}")
    return parts._replace(netloc="models")


def last_model(context: Context, asset: Asset) -> dict[str, Any] | None:
    """The ``extra`` of ``asset``'s newest event (the model last published), None before the first;
    ``asset`` must be an inlet of the running task."""
    events = context["inlet_events"][asset].ascending(False).limit(1)
    return dict(events[0].extra or {}) if events else None
