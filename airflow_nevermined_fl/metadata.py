"""S3-backed metadata store for DDOs: one JSON object per DID under ``ddo/``."""

from __future__ import annotations

from typing import Any

from airflow_nevermined_fl import ddo as ddos
from airflow_nevermined_fl.hooks.storage import StorageHook


class MetadataStore:
    """Store and resolve DDOs by DID in the storage connection's bucket."""

    prefix = "ddo"

    def __init__(self, storage: StorageHook) -> None:
        self.storage = storage

    def key(self, did: str) -> str:
        if not did.startswith("did:nv:"):
            raise ValueError(f"expected a did:nv:<hex> DID, got {did!r}")
        return f"{self.prefix}/{did[len('did:nv:') :]}.json"

    def url(self, did: str) -> str:
        return self.storage.url(self.key(did))

    def put(self, ddo: dict[str, Any]) -> str:
        """Store a DDO (its checksum verified first); return its URL."""
        ddos.verify(ddo)
        return self.storage.put_json(self.key(ddo["id"]), ddo)

    def get(self, did: str) -> dict[str, Any]:
        ddo = self.storage.get_json(self.url(did))
        ddos.verify(ddo)
        return ddo

    def exists(self, did: str) -> bool:
        return self.storage.exists(self.url(did))

    def annotate(self, did: str, **info: Any) -> dict[str, Any]:
        """Record ``info`` in the DDO's ``additionalInformation`` (outside the checksummed block)."""
        ddo = self.get(did)
        ddo["service"][0]["attributes"]["additionalInformation"].update(info)
        self.put(ddo)
        return ddo
