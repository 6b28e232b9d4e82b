"""Resolve a provider's compute asset DID: on-chain registry -> DDO (checksum verified) -> provider terms.

Everything the consumer knows about a provider comes from here: the gateway endpoint, the provider's
address (the DID's owner on chain) and its price (in units of the deployment's token: a DDO pricing in
another token is refused). DDOs are fetched from the URL
registered with the DID (the provider's gateway over http(s), or an ``s3://`` metadata store with the
consumer's storage).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import httpx

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.contracts.errors import InvalidInputError
from airflow_nevermined_fl.contracts.units import positive_tokens

if TYPE_CHECKING:
    from airflow_nevermined_fl.contracts.keeper import DidRecord, Keeper
    from airflow_nevermined_fl.hooks.storage import StorageHook

ROLES = {"fl-coordinator": "coordinator", "fl-participant": "participant"}


class ResolveError(ValueError):
    """The DID does not resolve to a valid compute asset."""


@dataclass(frozen=True)
class ProviderRef:
    """A provider's compute service, as its asset DID says (JSON-serializable through ``to_dict``);
    ``price`` in token units, a plain decimal string; ``policy``: what the provider runs (its DDO's
    ``main.policy``, :mod:`.protocol.policy`; None from a provider publishing none)."""

    did: str
    name: str
    role: str
    address: str
    endpoint: str
    price: str
    dataset: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fetch_ddo(url: str, storage: StorageHook | None = None, ca_file: str | None = None) -> dict[str, Any]:
    """The JSON document at a DID's registered URL."""
    if url.startswith("s3://"):
        if storage is None:
            raise ResolveError(f"{url}: an s3 DDO needs a storage connection")
        return storage.get_json(url)
    if not url.startswith(("http://", "https://")):
        raise ResolveError(f"{url}: unsupported DDO URL scheme")
    try:
        response = httpx.get(url, timeout=10.0, verify=ca_file or True)
    except httpx.HTTPError as exc:
        raise ResolveError(f"DDO at {url} unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ResolveError(f"DDO at {url}: HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ResolveError(f"DDO at {url}: not JSON") from None


def registered_ddo(
    keeper: Keeper, did: str, storage: StorageHook | None = None, ca_file: str | None = None
) -> tuple[DidRecord, dict[str, Any]]:
    """The on-chain record of ``did`` and its DDO, whose ``main`` block matches the registered checksum."""
    record = keeper.get_did(did)
    doc = fetch_ddo(record.url, storage, ca_file)
    if not ddo.is_registered(doc, record.did, record.checksum):
        raise ResolveError(f"{did}: the DDO at {record.url} does not match the checksum registered on chain")
    return record, doc


def resolve_provider(
    keeper: Keeper, did: str, storage: StorageHook | None = None, ca_file: str | None = None
) -> ProviderRef:
    """The compute service behind ``did``; :class:`ResolveError` when it is not one."""
    record, doc = registered_ddo(keeper, did, storage, ca_file)
    main = ddo.main_block(doc)
    service = main.get("service") or {}
    if main.get("type") != "compute" or service.get("type") not in ROLES:
        raise ResolveError(f"{did} is not a compute asset of an FL provider (type {main.get('type')!r})")
    if str(main.get("provider", "")).lower() != record.owner.lower():
        raise ResolveError(
            f"{did}: its DDO names provider {main.get('provider')}, the DID's owner is {record.owner}"
        )
    token = str(service.get("token", ""))
    if token.lower() != keeper.token_address.lower():
        raise ResolveError(
            f"{did}: its DDO's price is in token {token or None}, not in this deployment's token "
            f"{keeper.token_address}"
        )
    try:
        price = positive_tokens(service.get("price"), f"{did}: its DDO's price")
    except InvalidInputError as err:
        raise ResolveError(str(err)) from None
    return ProviderRef(
        did=record.did,
        name=str(main.get("name") or record.did[7:19]),
        role=ROLES[service["type"]],
        address=record.owner,
        endpoint=str(service.get("endpoint", "")).rstrip("/"),
        price=price,
        dataset=main.get("dataset"),
        policy=main.get("policy"),
    )
