"""Publish the trained model (checksum verified, DID with provenance) and only then release escrow."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.operators.base import SessionOperator, as_list, metadata_store, nevermined
from airflow_nevermined_fl.operators.payment import complete
from airflow_nevermined_fl.operators.workflow import latest_model_key

if TYPE_CHECKING:
    from airflow.sdk import Context


class PublishModelOperator(SessionOperator):
    """Verify the final model against the coordinator's checksum, upload it, register its DID (session
    id and provenance to the workflow DIDs in its metadata); then each provider fulfils its compute
    condition and its escrow is released: payment happens only on completion.

    Output: ``model_did``, ``model_url``, ``model_sha256``, ``ddo_url``, ``final_accuracy``,
    ``rounds_metrics``, ``released`` ({provider: {"compute", "release"} tx hashes, None when already
    done}), ``tx_hashes`` (model DID registration, provenance).
    """

    template_fields = ("session", "workflow", "payments", "result")
    ui_color = "#e3d6f8"

    def __init__(self, *, workflow: Any, payments: Any, result: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow = workflow
        self.payments = payments
        self.result = result

    def execute(self, context: Context) -> dict[str, Any]:
        conf = self.conf
        reported = self.result.get("model") or {}
        if not reported.get("url") or not reported.get("sha256"):
            raise AirflowFailException(f"coordinator reported no final model: {reported}")
        mstore = metadata_store(conf["storage_conn_id"])
        store = mstore.storage
        data = store.get_bytes(reported["url"])
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 != reported["sha256"].removeprefix("0x").lower():
            raise AirflowFailException(
                f"model {reported['url']}: sha256 {sha256} is not the coordinator's {reported['sha256']}"
            )
        model_url = store.put_bytes(f"models/{self.session_id}/model.npz", data, "application/x-npz")
        consumer = nevermined(conf["consumer_conn_id"])
        derived_from = [self.workflow["coordinator_did"], *self.workflow["participant_dids"].values()]
        metrics = {"rounds": self.result["rounds_metrics"], "finalAccuracy": self.result["final_accuracy"]}
        main = ddo.model_main(
            self.session_id, consumer.address, "0x" + sha256, model_url, derived_from, metrics
        )
        seed = consumer.did_seed(self.session_id, "model")
        model_did = consumer.did_for(seed, consumer.address)
        if not (mstore.exists(model_did) and ddo.ddo_checksum(mstore.get(model_did)) == ddo.checksum(main)):
            mstore.put(ddo.build(model_did, consumer.address, main, {"sessionId": self.session_id}))
        record = consumer.register_did(seed, ddo.checksum(main), [], mstore.url(model_did))
        provenance = consumer.record_provenance(model_did, derived_from, "fl-session")
        provenance_tx = [entry["tx_hash"] for entry in provenance if entry["tx_hash"]]
        self.log.info("model %s registered (tx %s), derived from %s", model_did, record.tx_hash, derived_from)
        payments = as_list(self.payments)
        # Each provider's own account fulfils and releases: independent transactions, sent side by side.
        with ThreadPoolExecutor(max_workers=min(8, len(payments) or 1)) as pool:
            released = dict(zip([p["name"] for p in payments], pool.map(complete, payments), strict=True))
        for name, txs in released.items():
            self.log.info(
                "%s: compute fulfilled (tx %s), escrow released (tx %s)", name, txs["compute"], txs["release"]
            )
        ti = context["ti"]
        store.put_json(
            latest_model_key(ti.dag_id),
            {
                "model_did": model_did,
                "model_url": model_url,
                "session_id": self.session_id,
                "run_id": ti.run_id,
            },
        )
        return {
            "session_id": self.session_id,
            "model_did": model_did,
            "model_url": model_url,
            "model_sha256": sha256,
            "ddo_url": mstore.url(model_did),
            "final_accuracy": self.result["final_accuracy"],
            "rounds_metrics": self.result["rounds_metrics"],
            "released": released,
            "tx_hashes": {"register": record.tx_hash, "provenance": provenance_tx},
        }
