"""Publish the trained model (checksum verified, DID with provenance); confirm the providers' settlements."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.links import ModelDdoLink, ModelRegistrationLink
from airflow_nevermined_fl.operators.base import SessionOperator, as_list, by_name, gateway, metadata_store
from airflow_nevermined_fl.runtime.workload import UNSUCCESSFUL

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook


class PublishModelOperator(SessionOperator):
    """Verify the final model against the coordinator's checksum, upload it, register its DID (session
    id and provenance to the workflow DIDs in its metadata); then wait (``settle_timeout``) until every
    provider's gateway has settled its own agreement on completion (compute fulfilled, escrow released
    with the provider's key): payment happens only for completed work. Each asset among its ``outlets``
    (the DAG factory's: the DAG's model asset) gets an event, ``extra`` ``{"model_did", "model_url",
    "sha256", "final_accuracy", "rounds", "session_id"}``; a retry that succeeds announces the model again.

    Output: ``model_did``, ``model_url``, ``model_sha256``, ``ddo_url``, ``final_accuracy`` (the last
    round's global model scored by the participants on held-out rows: the federated evaluation),
    ``final_train_accuracy`` (their locally trained weights' score), ``rounds_metrics``, ``released``
    ({provider: {"compute", "release"} tx hashes as the gateways report them}), ``unpaid`` (data providers
    dropped from the session: refunded by the teardown), ``tx_hashes`` (model DID registration, provenance).
    """

    template_fields = ("session", "workflow", "payments", "result")
    operator_extra_links = (ModelDdoLink(), ModelRegistrationLink())
    ui_color = "#e3d6f8"

    def __init__(
        self, *, workflow: Any, payments: Any, result: Any, settle_timeout: float = 120.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.workflow = workflow
        self.payments = payments
        self.result = result
        self.settle_timeout = settle_timeout

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
        consumer = self.consumer
        derived_from = [self.workflow["coordinator_did"], *self.workflow["participant_dids"].values()]
        metrics = {
            "rounds": self.result["rounds_metrics"],
            "finalAccuracy": self.result["final_accuracy"],  # the global model's, federated evaluation
            "finalTrainAccuracy": self.result.get("final_train_accuracy"),  # locally trained weights'
            "strategy": conf.get("strategy", {"name": "fedavg"}),  # as in the coordinator's workflow DDO
        }
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
        released, unpaid = self._settlements(consumer, as_list(self.payments))
        for name, txs in released.items():
            self.log.info(
                "%s: compute fulfilled (tx %s), escrow released (tx %s)", name, txs["compute"], txs["release"]
            )
        event = {
            "model_did": model_did,
            "model_url": model_url,
            "sha256": sha256,
            "final_accuracy": self.result["final_accuracy"],
            "rounds": self.result["rounds"],
            "session_id": self.session_id,
        }
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = event
        return {
            "session_id": self.session_id,
            "model_did": model_did,
            "model_url": model_url,
            "model_sha256": sha256,
            "ddo_url": mstore.url(model_did),
            "final_accuracy": self.result["final_accuracy"],
            "final_train_accuracy": self.result.get("final_train_accuracy"),
            "rounds_metrics": self.result["rounds_metrics"],
            "released": released,
            "unpaid": unpaid,
            "tx_hashes": {"register": record.tx_hash, "provenance": provenance_tx},
        }

    def _settlements(
        self, consumer: NeverminedHook, payments: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], list[str]]:
        """Each provider's settlement as its gateway reports it, once all are settled (a gateway that
        does not answer for a while is asked again until ``settle_timeout``), and the data providers
        whose execution failed (dropped from a session that went on without them): not paid."""
        from airflow_nevermined_fl.protocol.client import GatewayError

        pending = {p["name"]: p for p in payments}
        settled: dict[str, Any] = {}
        unpaid: list[str] = []
        deadline = time.monotonic() + self.settle_timeout
        while pending:
            for name, payment in list(pending.items()):
                try:
                    status = gateway(consumer, payment).status(payment["agreement"]["agreement_id"])
                except GatewayError as err:
                    if err.status_code is not None:
                        raise AirflowFailException(f"{name}: {err}") from None
                    continue
                settlement = status.get("settlement") or {}
                if settlement.get("settled"):
                    settled[name] = {
                        "compute": settlement.get("compute_tx"),
                        "release": settlement.get("release_tx"),
                    }
                    del pending[name]
                elif status["state"] in UNSUCCESSFUL and payment["role"] != "coordinator":
                    self.log.warning(
                        "%s: its execution %s (dropped); it is not paid: its escrow is refunded",
                        name,
                        status["state"],
                    )
                    unpaid.append(name)
                    del pending[name]
                elif status["state"] in UNSUCCESSFUL:
                    raise AirflowFailException(f"{name}: its execution {status['state']}; it is not paid")
            if pending and time.monotonic() > deadline:
                raise AirflowFailException(
                    f"not settled by their gateways within {self.settle_timeout}s: {sorted(pending)}"
                )
            if pending:
                time.sleep(0.5)
        for name in settled:
            states = consumer.condition_states(by_name(payments)[name]["agreement"])
            if states != {"compute": "fulfilled", "lock": "fulfilled", "escrow": "fulfilled"}:
                raise AirflowFailException(f"{name}: gateway reports settled, but the chain says {states}")
        return settled, unpaid
