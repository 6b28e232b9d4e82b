"""What every session operator shares: the validated session, the consumer's hooks, gateway clients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook
    from airflow_nevermined_fl.hooks.storage import StorageHook
    from airflow_nevermined_fl.metadata import MetadataStore
    from airflow_nevermined_fl.protocol.client import GatewayClient


def nevermined(conn_id: str) -> NeverminedHook:
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

    return NeverminedHook(nevermined_conn_id=conn_id)


def storage(conn_id: str) -> StorageHook:
    from airflow_nevermined_fl.hooks.storage import StorageHook

    return StorageHook(storage_conn_id=conn_id)


def metadata_store(conn_id: str) -> MetadataStore:
    from airflow_nevermined_fl.metadata import MetadataStore

    return MetadataStore(storage(conn_id))


def gateway(
    consumer: NeverminedHook, provider: dict[str, Any], timeout: float | None = None
) -> GatewayClient:
    """A client of the gateway at ``provider["endpoint"]`` (run by the address ``provider["provider"]``:
    a payment's or an execution's fields) signing as the consumer; each call bounded by ``timeout`` s
    (None: the client's default)."""
    from airflow_nevermined_fl.protocol.client import TIMEOUT, GatewayClient

    return GatewayClient(
        provider["endpoint"],
        audience=provider["provider"],
        address=consumer.account().address,
        sign=consumer.sign_message,
        ca_file=consumer.gateway_ca_file,
        timeout=TIMEOUT if timeout is None else timeout,
        chain_id=chain_id(consumer),
    )


def chain_id(consumer: NeverminedHook) -> int:
    """The chain the consumer pays on, as its own connection states it (its ``chain_id``, else its
    deployment's; else the node's, checked against the deployment): bound into every gateway signature."""
    settings = consumer.keeper_settings()
    known = settings.chain_id if settings.chain_id is not None else settings.deployment.chain_id
    return known if known is not None else consumer.get_conn().w3.eth.chain_id


def as_list(value: Any) -> list[dict[str, Any]]:
    """Results of one or several tasks (a dict, or the lazy sequence of a mapped task, or a list of
    those) as one flat list of dicts, without the missing entries."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [item for part in value[:] for item in as_list(part)]  # a slice: one request, not one per item


def by_name(payments: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in payments}


class SessionOperator(BaseOperator):
    """Base of the session steps: ``session`` is the validate step's output (``session_id`` + ``conf``)."""

    template_fields: tuple[str, ...] = ("session",)
    ui_color = "#d6e9f8"

    def __init__(self, *, session: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session

    @property
    def session_id(self) -> str:
        return self.session["session_id"]

    @property
    def conf(self) -> dict[str, Any]:
        return self.session["conf"]

    @property
    def consumer(self) -> NeverminedHook:
        return nevermined(self.conf["consumer_conn_id"])
