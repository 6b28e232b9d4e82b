"""The keeper's DID registry: deterministic DID seeds, registering and reading DIDs."""

from __future__ import annotations

from collections.abc import Sequence

from web3 import Web3

from airflow_nevermined_fl.contracts.connection import KeeperConnection
from airflow_nevermined_fl.contracts.errors import InvalidInputError
from airflow_nevermined_fl.contracts.records import DidRecord
from airflow_nevermined_fl.contracts.values import address_of, bytes32, did_bytes, did_str, hex_str, seed_id


class DidRegistryMixin(KeeperConnection):
    """DIDs in the DIDRegistry, registered by this account."""

    @staticmethod
    def did_seed(session_id: str, name: str) -> str:
        """DID seed for a named asset (workflow, model) of a session."""
        return hex_str(Web3.keccak(text=f"nvfl/did/{session_id}/{name}"))

    @staticmethod
    def did_for(seed: str | bytes, owner: str) -> str:
        """The DID ``owner`` gets when registering ``seed`` (``hashDID``)."""
        return did_str(seed_id(bytes32(seed, "seed"), address_of(owner, "owner")))

    def get_did(self, did: str | bytes) -> DidRecord:
        """The registered DID; :class:`InvalidInputError` for an unknown one."""
        raw = did_bytes(did)
        owner, checksum, url, _, block, providers, *_ = (
            self._c("DIDRegistry").functions.getDIDRegister(raw).call()
        )
        if int(owner, 16) == 0:
            raise InvalidInputError(f"did: unknown DID {did_str(raw)} (not registered on this chain)")
        return DidRecord(did_str(raw), owner, url, hex_str(checksum), list(providers), block)

    def register_did(
        self, seed: str | bytes, checksum: str | bytes, providers: Sequence[str], url: str
    ) -> DidRecord:
        """Register ``did_for(seed, me)`` with DDO checksum, providers and URL (no-op when already there)."""
        seed_b = bytes32(seed, "seed")
        checksum_b = bytes32(checksum, "checksum")
        if isinstance(providers, str):
            raise InvalidInputError("providers: expected a list of addresses, got a string")
        provider_list = [address_of(p, f"providers[{i}]") for i, p in enumerate(providers)]
        if not isinstance(url, str) or not url:
            raise InvalidInputError(f"url: expected a non-empty string, got {url!r}")
        did = self.did_for(seed_b, self.address)
        try:
            existing = self.get_did(did)
        except InvalidInputError:
            tx_hash = self._tx("DIDRegistry", "registerAttribute", seed_b, checksum_b, provider_list, url)
            return DidRecord(**{**self.get_did(did).to_dict(), "tx_hash": tx_hash})
        if (existing.checksum, existing.url, set(existing.providers)) != (
            hex_str(checksum_b),
            url,
            set(provider_list),
        ):
            raise InvalidInputError(
                f"seed: {did} is already registered with another checksum, url or providers; use a new seed"
            )
        return existing
