"""The keeper's provenance: record and read W3C PROV entries (wasDerivedFrom, used) in the DIDRegistry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from web3 import Web3

from airflow_nevermined_fl.contracts.did_registry import DidRegistryMixin
from airflow_nevermined_fl.contracts.errors import InvalidInputError, StateError
from airflow_nevermined_fl.contracts.values import bytes32, did_bytes, did_str, hex_str, keccak_abi


class ProvenanceMixin(DidRegistryMixin):
    """Provenance of a model DID from its source DIDs."""

    def record_provenance(
        self, model_did: str, derived_from: Sequence[str], activity: str, attributes: str = ""
    ) -> list[dict[str, Any]]:
        """Record ``model wasDerivedFrom source`` and ``source used`` by ``activity`` for each source DID.

        Provenance ids are deterministic, so a re-run sends nothing for entries already recorded.
        Needs provenance storage on (NeverminedConfig); this account must be owner/provider/delegate of
        each source.
        """
        model = did_bytes(model_did, "model_did")
        if isinstance(derived_from, str) or not derived_from:
            raise InvalidInputError("derived_from: expected a non-empty list of DIDs")
        sources = [did_bytes(d, f"derived_from[{i}]") for i, d in enumerate(derived_from)]
        if not isinstance(activity, str) or not activity:
            raise InvalidInputError(f"activity: expected a non-empty string, got {activity!r}")
        self.get_did(model)
        registry = self._c("DIDRegistry").functions
        for i, source in enumerate(sources):
            self.get_did(source)
            if not registry.isOwnerProviderOrDelegate(source).call({"from": self.address}):
                raise InvalidInputError(
                    f"derived_from[{i}]: {self.address} is not owner, provider or delegate of"
                    f" {did_str(source)}"
                )
        if not self._c("NeverminedConfig").functions.getProvenanceStorage().call():
            raise StateError("provenance storage is off in NeverminedConfig: entries would not be readable")
        activity_id = Web3.keccak(text=activity)
        records = []
        for source in sources:
            steps = (
                ("wasDerivedFrom", (model, source, self.address, activity_id, attributes)),
                ("used", (source, self.address, activity_id, b"", attributes)),
            )
            for method, args in steps:
                prov_id = keccak_abi(
                    ["string", "bytes32", "bytes32", "bytes32"], [method, model, source, activity_id]
                )
                tx_hash = None
                if int(registry.getProvenanceEntry(prov_id).call()[6], 16) == 0:
                    tx_hash = self._tx("DIDRegistry", method, prov_id, *args)
                records.append(
                    {**self.get_provenance(hex_str(prov_id)), "method": method, "tx_hash": tx_hash}
                )
        return records

    def get_provenance(self, prov_id: str) -> dict[str, Any]:
        """A provenance entry: did, related_did, agent, activity_id, created_by, block_number."""
        did, related, agent, activity, _, _, created_by, block, _ = (
            self._c("DIDRegistry").functions.getProvenanceEntry(bytes32(prov_id, "prov_id")).call()
        )
        if int(created_by, 16) == 0:
            raise InvalidInputError(f"prov_id: no provenance entry {prov_id}")
        return {
            "prov_id": prov_id,
            "did": did_str(did),
            "related_did": did_str(related) if any(related) else None,
            "agent": agent,
            "activity_id": hex_str(activity),
            "created_by": created_by,
            "block_number": block,
        }
