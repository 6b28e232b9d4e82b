"""Validate the session conf; publish the workflow DDOs and register their DIDs."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.operators.base import (
    SessionOperator,
    as_list,
    by_name,
    metadata_store,
    nevermined,
    storage,
)
from airflow_nevermined_fl.params import ConfError, validate_conf

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook
    from airflow_nevermined_fl.metadata import MetadataStore


def session_id_for(dag_id: str, run_id: str) -> str:
    """Deterministic per run, so retried tasks address the same agreements and DIDs."""
    return "fl-" + hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:16]


def latest_model_key(dag_id: str) -> str:
    """Storage key of the pointer to the last model a DAG (workflow) published."""
    return f"models/by-dag/{dag_id}/latest.json"


class ValidateSessionOperator(BaseOperator):
    """Check the run's conf (schema + cross-field rules + accounts) before any transaction.

    Output (what the mapped tasks expand over): the data providers of the conf. XCom key ``session``:
    ``{"session_id", "conf", "accounts": {name: address}, "coordinator": <conf entry with role>}``;
    key ``coordinator``: that coordinator entry alone.
    ``warm_start``: when the conf names no ``initial_model``, start from the last model this DAG
    published, if any.
    """

    ui_color = "#e8f3d6"

    def __init__(self, *, warm_start: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warm_start = warm_start

    def execute(self, context: Context) -> list[dict[str, Any]]:
        try:
            conf = validate_conf(dict(context["params"]))
        except ConfError as err:
            raise AirflowFailException(str(err)) from None
        accounts = self._accounts(conf)
        ti = context["ti"]
        if self.warm_start and conf["initial_model"] is None:
            conf["initial_model"] = self._latest_model(conf, ti.dag_id)
        session = {
            "session_id": session_id_for(ti.dag_id, ti.run_id),
            "conf": conf,
            "accounts": accounts,
            "coordinator": {"role": "coordinator", **conf["coordinator"]},
        }
        ti.xcom_push(key="session", value=session)
        ti.xcom_push(key="coordinator", value=session["coordinator"])
        providers = [{"role": "participant", **p} for p in conf["data_providers"]]
        self.log.info(
            "session %s: %d data providers, %d rounds", session["session_id"], len(providers), conf["rounds"]
        )
        return providers

    @staticmethod
    def _accounts(conf: dict[str, Any]) -> dict[str, str]:
        """Account address per actor, from its connection; a conf ``account`` must match it."""
        accounts = {"consumer": nevermined(conf["consumer_conn_id"]).address}
        entries = [("conf.coordinator", conf["coordinator"])]
        entries += [(f"conf.data_providers[{i}]", p) for i, p in enumerate(conf["data_providers"])]
        for where, entry in entries:
            address = nevermined(entry["conn_id"]).address
            if entry.get("account") and entry["account"].lower() != address.lower():
                raise AirflowFailException(
                    f"{where}.account: {entry['account']} is not the account of {entry['conn_id']!r}"
                )
            accounts[entry["name"]] = address
        return accounts

    def _latest_model(self, conf: dict[str, Any], dag_id: str) -> str | None:
        store = storage(conf["storage_conn_id"])
        pointer = store.url(latest_model_key(dag_id))
        if not store.exists(pointer):
            self.log.info("warm start: no model published by %s yet; starting fresh", dag_id)
            return None
        latest = store.get_json(pointer)
        self.log.info("warm start from %s (session %s)", latest["model_did"], latest["session_id"])
        return latest["model_did"]


class PublishWorkflowOperator(SessionOperator):
    """Build the coordinator (``fl-coordinator``) and participant (``workflow``) DDOs, store them in
    the metadata store and register their DIDs (consumer's account). Idempotent on retry."""

    template_fields = ("session", "payments")

    def __init__(self, *, payments: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payments = payments

    def execute(self, context: Context) -> dict[str, Any]:
        conf, accounts = self.conf, self.session["accounts"]
        consumer = nevermined(conf["consumer_conn_id"])
        store = metadata_store(conf["storage_conn_id"])
        payments = by_name(as_list(self.payments))
        coordinator = conf["coordinator"]
        published: dict[str, dict[str, Any]] = {}
        main = ddo.coordinator_main(
            conf, self.session_id, accounts["consumer"], accounts[coordinator["name"]]
        )
        published["coordinator"] = self._publish(
            consumer, store, "coordinator", main, [accounts[coordinator["name"]]]
        )
        coordinator_did = published["coordinator"]["did"]
        for p in conf["data_providers"]:
            main = ddo.participant_main(
                self.session_id,
                accounts["consumer"],
                p,
                accounts[p["name"]],
                coordinator_did,
                payments[p["name"]]["asset_did"],
                conf["model"],
            )
            published[p["name"]] = self._publish(
                consumer, store, f"participant/{p['name']}", main, [accounts[p["name"]]]
            )
        return {
            "coordinator_did": coordinator_did,
            "participant_dids": {p["name"]: published[p["name"]]["did"] for p in conf["data_providers"]},
            "ddo_urls": {rec["did"]: rec["url"] for rec in published.values()},
            "tx_hashes": {rec["did"]: rec["tx_hash"] for rec in published.values()},
        }

    def _publish(
        self,
        consumer: NeverminedHook,
        store: MetadataStore,
        name: str,
        main: dict[str, Any],
        providers: list[str],
    ) -> dict[str, Any]:
        seed = consumer.did_seed(self.session_id, name)
        did = consumer.did_for(seed, consumer.address)
        checksum = ddo.checksum(main)
        if not (store.exists(did) and ddo.ddo_checksum(store.get(did)) == checksum):
            store.put(ddo.build(did, consumer.address, main))
        url = store.url(did)
        record = consumer.register_did(seed, checksum, providers, url)
        if record.checksum.lower() != checksum.lower():
            raise AirflowFailException(f"{did}: registered with another checksum ({record.checksum})")
        self.log.info("%s %s DDO at %s (tx %s)", main["type"], did, url, record.tx_hash or "none: registered")
        return {"did": did, "url": url, "tx_hash": record.tx_hash}
