"""Workflow and model DDOs (DID documents) of an FL session.

A DDO's ``checksum`` is the SHA-256 of the canonical JSON of its ``main`` metadata block; that is what
gets registered on chain with the DID. Fields outside ``main`` (``additionalInformation``: the
coordinator's signed announcement once it serves, metrics) may be updated later without invalidating the
registration.
DDOs are public: they are built only from public values (addresses, DIDs, parameters), never from
connections.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from airflow_nevermined_fl import __version__
from airflow_nevermined_fl.runtime.workload import COORDINATOR_MODULE, PARTICIPANT_MODULE

RUNTIME_IMAGE = "airflow-nevermined-fl-runtime"


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def checksum(data: Any) -> str:
    """``0x`` + SHA-256 hex of the canonical JSON of ``data``."""
    return "0x" + hashlib.sha256(canonical(data)).hexdigest()


def main_block(ddo: dict[str, Any]) -> dict[str, Any]:
    return ddo["service"][0]["attributes"]["main"]


def ddo_checksum(ddo: dict[str, Any]) -> str:
    return checksum(main_block(ddo))


def is_registered(doc: Any, did: str, registered_checksum: str) -> bool:
    """Whether ``doc`` is the DDO registered on chain as ``did`` with ``registered_checksum`` (False for a
    malformed document)."""
    try:
        return doc["id"] == did and ddo_checksum(doc).lower() == registered_checksum.lower()
    except (KeyError, IndexError, TypeError):
        return False


def verify(ddo: dict[str, Any]) -> None:
    """Raise ``ValueError`` when the DDO's recorded checksum does not match its ``main`` block."""
    if ddo["proof"]["checksum"] != ddo_checksum(ddo):
        raise ValueError(f"DDO {ddo.get('id')}: checksum mismatch")


def _container(module: str) -> dict[str, Any]:
    return {"image": RUNTIME_IMAGE, "tag": __version__, "entrypoint": f"python -m {module}"}


def build(did: str, owner: str, main: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete DDO for ``main`` under ``did``; ``extra`` goes to ``additionalInformation``."""
    return {
        "@context": "https://w3id.org/did/v1",
        "id": did,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "publicKey": [{"id": f"{did}#owner", "type": "EthereumECDSAKey", "owner": owner}],
        "proof": {"type": "DDOIntegritySignature", "creator": owner, "checksum": checksum(main)},
        "service": [
            {
                "type": "metadata",
                "index": 0,
                "attributes": {"main": main, "additionalInformation": extra or {}},
            }
        ],
    }


def asset_main(
    service_type: str,
    name: str,
    provider: str,
    endpoint: str,
    price: str,
    token: str,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``main`` block of a provider's compute asset (``fl-coordinator`` or ``fl-participant`` service):
    its gateway endpoint, address and price (a decimal string in units of ``token``, e.g. ``"5"``); a
    participant's public ``dataset`` description (features, classes, rows), never the data's location."""
    main: dict[str, Any] = {
        "type": "compute",
        "name": name,
        "author": provider,
        "license": "Apache-2.0",
        "provider": provider,
        "service": {"type": service_type, "endpoint": endpoint, "price": price, "token": token},
    }
    if dataset is not None:
        main["dataset"] = dataset
    return main


def coordinator_main(
    conf: dict[str, Any], session_id: str, consumer: str, provider: str, participants: list[str]
) -> dict[str, Any]:
    """``main`` block of the coordinator workflow (type ``fl-coordinator``); ``participants``: the data
    providers' asset DIDs (the coordinator seats exactly those providers)."""
    return {
        "type": "fl-coordinator",
        "name": f"FL coordinator {session_id}",
        "author": consumer,
        "license": "Apache-2.0",
        "provider": provider,
        "workflow": {"coordinator": _container(COORDINATOR_MODULE)},
        "parameters": {
            "sessionId": session_id,
            "rounds": conf["rounds"],
            "epochs": conf["epochs"],
            "minParticipants": conf["min_participants"],
            "participantsRatio": conf["fraction"],
            "model": conf["model"],
            "heartbeat": conf["heartbeat"],
            "stallTimeout": conf["stall_timeout"],
            "sessionTimeout": conf["session_timeout"],
            "initialModel": conf["initial_model"],
            "strategy": conf.get("strategy", {"name": "fedavg"}),
            "participants": sorted(participants),
        },
    }


def participant_main(
    session_id: str,
    consumer: str,
    provider: dict[str, Any],
    provider_address: str,
    coordinator_did: str,
    dataset_did: str,
    model: dict[str, Any],
) -> dict[str, Any]:
    """``main`` block of one data provider's participant workflow (type ``workflow``)."""
    return {
        "type": "workflow",
        "name": f"FL participant {provider['name']} {session_id}",
        "author": consumer,
        "license": "Apache-2.0",
        "provider": provider_address,
        "workflow": {
            "stages": [
                {
                    "index": 0,
                    "input": [{"index": 0, "id": dataset_did}],
                    "requirements": {"container": _container(PARTICIPANT_MODULE)},
                    "transformation": {"id": coordinator_did, "model": model},
                    "output": {"sessionId": session_id},
                }
            ]
        },
    }


def model_main(
    session_id: str,
    owner: str,
    model_sha256: str,
    model_url: str,
    derived_from: list[str],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """``main`` block of the trained model, with provenance to the workflow DIDs."""
    return {
        "type": "model",
        "name": f"FL model {session_id}",
        "author": owner,
        "license": "Apache-2.0",
        "files": [
            {"index": 0, "url": model_url, "contentType": "application/x-npz", "checksum": model_sha256}
        ],
        "provenance": {
            "sessionId": session_id,
            "wasDerivedFrom": sorted(derived_from),
            "activity": "fl-session",
        },
        "metrics": metrics,
    }
