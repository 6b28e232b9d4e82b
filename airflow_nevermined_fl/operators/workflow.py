"""Validate the session conf; publish the workflow DDOs and register their DIDs."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.assets import last_model
from airflow_nevermined_fl.operators.base import SessionOperator, metadata_store, nevermined, storage
from airflow_nevermined_fl.params import ConfError, validate_conf

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook
    from airflow_nevermined_fl.hooks.storage import StorageHook
    from airflow_nevermined_fl.metadata import MetadataStore


def session_id_for(dag_id: str, run_id: str) -> str:
    """Deterministic per run, so retried tasks address the same agreements and DIDs."""
    return "fl-" + hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:16]


def _unique_names(providers: list[dict[str, Any]]) -> None:
    """Provider names (from their DDOs) label tasks and payments: suffix repeated ones with the DID."""
    seen: set[str] = set()
    for p in providers:
        if p["name"] in seen:
            p["name"] = f"{p['name']}-{p['did'][7:15]}"
        seen.add(p["name"])


def check_policy(
    conf: dict[str, Any], policy: Any, backend: str | None, who: str, coordinator: str | None = None
) -> None:
    """Fail unless the session of ``conf`` is within a provider's published ``policy`` (None: it
    publishes none): the model, the bounds, on a container ``backend`` the image of the workflow DDOs and,
    for a data provider, its session's ``coordinator`` provider (address)."""
    from airflow_nevermined_fl.protocol.policy import (
        DEFAULT_IMAGE,  # what the workflow DDOs' containers name (ddo.coordinator_main, participant_main)
        Policy,
        PolicyError,
        check_coordinator,
        check_image,
        check_session,
    )

    if policy is None:
        return
    try:
        allowed = Policy.parse(policy, "policy")
        check_session(
            allowed,
            model=conf["model"],
            rounds=conf["rounds"],
            epochs=conf["epochs"],
            heartbeat=conf["heartbeat"],
            session_timeout=conf["session_timeout"],
        )
        if backend in ("docker", "kubernetes"):
            check_image(allowed, DEFAULT_IMAGE)
        if coordinator is not None:
            check_coordinator(allowed, coordinator)
    except (PolicyError, ValueError) as err:
        raise AirflowFailException(f"{who}'s policy refuses this session: {err}") from None


class ValidateSessionOperator(BaseOperator):
    """Check everything checkable before any transaction: the conf (schema + cross-field rules), each
    provider DID (registered on chain, its DDO matching the registered checksum, the right service type),
    each provider's gateway (answers ``info`` as the DID's owner and says the service is ready), the
    session within each provider's published policy (model, bounds, image; :func:`check_policy`), prices
    against ``max_price``, the model against the participants' datasets, and the consumer's balance.

    Output (what the mapped tasks expand over): the data providers, resolved (``did``, ``name``, ``role``,
    ``address``, ``endpoint``, ``price``, ``dataset``). XCom key ``session``: ``{"session_id", "conf",
    "consumer", "coordinator": <resolved coordinator>, "providers": [...]}``; key ``coordinator``: the
    resolved coordinator alone.
    ``warm_start``: a model asset (an inlet of the task): when the conf names no ``initial_model``, start
    from the model of its newest event, if any (the DAG factory's: the DAG's own model asset).
    """

    ui_color = "#e8f3d6"

    def __init__(self, *, warm_start: Asset | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warm_start = warm_start
        if warm_start is not None:
            self.add_inlets([warm_start])

    def execute(self, context: Context) -> list[dict[str, Any]]:
        try:
            conf = validate_conf(dict(context["params"]))
        except ConfError as err:
            raise AirflowFailException(str(err)) from None
        consumer = nevermined(conf["consumer_conn_id"])
        store = storage(conf["storage_conn_id"])
        coordinator = self._provider(
            consumer, store, conf, "conf.coordinator", conf["coordinator"]["did"], "coordinator"
        )
        providers = [
            self._provider(
                consumer, store, conf, f"conf.data_providers[{i}]", entry["did"], "participant", coordinator
            )
            for i, entry in enumerate(conf["data_providers"])
        ]
        _unique_names([coordinator, *providers])
        self._check_terms(conf, consumer, coordinator, providers)
        ti = context["ti"]
        if self.warm_start is not None and conf["initial_model"] is None:
            conf["initial_model"] = self._last_model(context, self.warm_start)
        session = {
            "session_id": session_id_for(ti.dag_id, ti.run_id),
            "conf": conf,
            "consumer": consumer.account().address,
            "coordinator": coordinator,
            "providers": providers,
        }
        ti.xcom_push(key="session", value=session)
        ti.xcom_push(key="coordinator", value=coordinator)
        self.log.info(
            "session %s: coordinator %s, %d data providers, %d rounds",
            session["session_id"],
            coordinator["name"],
            len(providers),
            conf["rounds"],
        )
        return providers

    def _provider(
        self,
        consumer: NeverminedHook,
        store: StorageHook,
        conf: dict[str, Any],
        where: str,
        did: str,
        role: str,
        coordinator: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The resolved provider behind ``did``, its gateway answering and ready to serve it, its policy
        allowing the session of ``conf`` (for a data provider: with the resolved ``coordinator``)."""
        from airflow_nevermined_fl.contracts.errors import InvalidInputError
        from airflow_nevermined_fl.protocol.client import GatewayClient, GatewayError
        from airflow_nevermined_fl.resolver import ResolveError, resolve_provider

        try:
            ref = resolve_provider(consumer, did, store, consumer.gateway_ca_file)
        except (InvalidInputError, ResolveError) as err:
            raise AirflowFailException(f"{where}.did: {err}") from None
        if ref.role != role:
            raise AirflowFailException(f"{where}.did: {did} is a {ref.role} service, not a {role} service")
        try:
            info = GatewayClient(ref.endpoint, ref.address, ca_file=consumer.gateway_ca_file).info()
        except GatewayError as err:
            raise AirflowFailException(
                f"{where}.did: the provider's gateway does not answer: {err}"
            ) from None
        if str(info.get("provider", "")).lower() != ref.address.lower():
            raise AirflowFailException(
                f"{where}.did: the gateway at {ref.endpoint} is not run by the DID's owner {ref.address}"
            )
        service = next((s for s in info.get("services", []) if s.get("did") == ref.did), None)
        if service is None or not service.get("ready"):
            reason = service.get("reason") if service else "the gateway does not offer this asset"
            raise AirflowFailException(f"{where}.did: {ref.name} cannot serve now: {reason}")
        check_policy(
            conf,
            ref.policy,
            (info.get("backend") or {}).get("type"),
            f"{where}.did: {ref.name}",
            coordinator["address"] if coordinator else None,
        )
        self.log.info("%s: %s %s at %s, price %s", where, role, ref.name, ref.endpoint, ref.price)
        return ref.to_dict()

    @staticmethod
    def _check_terms(
        conf: dict[str, Any],
        consumer: NeverminedHook,
        coordinator: dict[str, Any],
        providers: list[dict[str, Any]],
    ) -> None:
        """Prices (token units) within the cap and payable in the token's base units, the model fitting
        every dataset, the consumer's balance covering all, the connection's explorer template valid."""
        from airflow_nevermined_fl.contracts.errors import InvalidInputError

        entries = [("conf.coordinator", coordinator)]
        entries += [(f"conf.data_providers[{i}]", p) for i, p in enumerate(providers)]
        cap, token = conf["max_price"], consumer.token
        for where, p in entries:
            if cap is not None and Decimal(p["price"]) > Decimal(cap):
                raise AirflowFailException(
                    f"{where}.did: {p['name']} asks {p['price']}, above max_price={cap}"
                )
        try:
            total = sum(token.base(p["price"], f"{where}.did: {p['name']}'s price") for where, p in entries)
            consumer.explorer_tx_url  # noqa: B018 - its template checked now, not after a transaction
        except InvalidInputError as err:
            raise AirflowFailException(str(err)) from None
        model = conf["model"]
        for where, p in entries[1:]:
            data = p.get("dataset") or {}
            for key, field in (("features", "num_features"), ("classes", "num_classes")):
                if field in model and key in data and data[key] > model[field]:
                    raise AirflowFailException(
                        f"conf.model.{field}: {model[field]}, but {p['name']}'s dataset ({where}) "
                        f"has {data[key]} {key}"
                    )
        balance = consumer.token_balance(consumer.address)
        if balance < total:
            raise AirflowFailException(
                f"conf: the session costs {token.format(total)}; the consumer {consumer.address} has "
                f"{token.format(balance)}"
            )

    def _last_model(self, context: Context, asset: Asset) -> str | None:
        last = last_model(context, asset)
        if last is None:
            self.log.info("warm start: no event of %s yet; starting fresh", asset.uri)
            return None
        if not isinstance(last.get("model_did"), str):
            raise AirflowFailException(f"warm start: the newest event of {asset.uri} names no model_did")
        self.log.info("warm start from %s (session %s)", last["model_did"], last.get("session_id"))
        return last["model_did"]


class PublishWorkflowOperator(SessionOperator):
    """Build the coordinator (``fl-coordinator``) and participant (``workflow``) DDOs, store them in
    the metadata store and register their DIDs (consumer's account). Idempotent on retry."""

    def execute(self, context: Context) -> dict[str, Any]:
        conf, consumer_address = self.conf, self.session["consumer"]
        consumer = self.consumer
        store = metadata_store(conf["storage_conn_id"])
        coordinator = self.session["coordinator"]
        assets = [p["did"] for p in self.session["providers"]]
        main = ddo.coordinator_main(conf, self.session_id, consumer_address, coordinator["address"], assets)
        published = {
            "coordinator": self._publish(consumer, store, "coordinator", main, [coordinator["address"]])
        }
        coordinator_did = published["coordinator"]["did"]
        for p in self.session["providers"]:
            main = ddo.participant_main(
                self.session_id, consumer_address, p, p["address"], coordinator_did, p["did"], conf["model"]
            )
            published[p["name"]] = self._publish(
                consumer, store, f"participant/{p['did']}", main, [p["address"]]
            )
        return {
            "coordinator_did": coordinator_did,
            "participant_dids": {p["name"]: published[p["name"]]["did"] for p in self.session["providers"]},
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
