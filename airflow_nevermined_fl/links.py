"""Extra links of the session steps, shown on their task instances in the Airflow UI.

- A step's transaction on the block explorer that the consumer's nevermined connection names (extra
  ``explorer_tx_url``: a URL template with ``{tx_hash}``); no link when it names none or the step sent
  no transaction (e.g. a retry that found its work done).
- The published model's DDO, served by the provider's plugin (behind Airflow's auth: the model is the
  consumer's, in its own storage).

Airflow 3 computes a link when its task ends, in the task's process, and keeps it as an XCom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink, conf
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def _output(ti_key: TaskInstanceKey, *path: str) -> Any:
    """The task's return value, or the item at ``path`` in it (None where absent)."""
    value = XCom.get_value(ti_key=ti_key, key="return_value")
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class TransactionLink(BaseOperatorLink):
    """The transaction at :attr:`path` in the task's output, on the consumer's block explorer."""

    path: ClassVar[tuple[str, ...]]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        template = operator.consumer.explorer_tx_url  # type: ignore[attr-defined]  # a SessionOperator
        tx_hash = _output(ti_key, *self.path)
        return template.format(tx_hash=tx_hash) if template and isinstance(tx_hash, str) else ""


class LockTransactionLink(TransactionLink):
    name = "Lock transaction"
    path = ("tx_hashes", "lock")


class ModelRegistrationLink(TransactionLink):
    name = "Model DID registration"
    path = ("tx_hashes", "register")


class ModelDdoLink(BaseOperatorLink):
    """The model DDO of the run, once published (the plugin reads it from the consumer's storage)."""

    name = "Model DDO"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow_nevermined_fl.plugins.rounds_chart import URL_PREFIX

        if not _output(ti_key, "model_did"):
            return ""
        base = conf.get("api", "base_url", fallback="").rstrip("/")
        query = urlencode({"dag_id": ti_key.dag_id, "run_id": ti_key.run_id})
        return f"{base}{URL_PREFIX}/model-ddo?{query}"
