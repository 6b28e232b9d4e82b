"""The coordinator's announcement: where a session's coordinator serves, the certificate it serves and the
agreement it serves for, signed (EIP-191) by the coordinator's provider.

The coordinator's gateway signs it once the coordinator serves, with the terms of the agreement it
executes (public: they let anyone recompute its on-chain condition ids); the consumer copies it into the
coordinator workflow DDO; each data provider's gateway checks that agreement on chain (a locked agreement
of its caller on a published ``fl-coordinator`` asset) and the signature against that asset's on-chain
owner before it launches a participant, which then trusts that certificate only. Neither the consumer nor
whoever can write the DDO's storage can point participants at another coordinator.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from airflow_nevermined_fl.runtime.channel import certificate_fingerprint

SCHEME = "nvfl-coordinator/2"
FIELDS = ("session_id", "url", "tls_cert", "signature")


class AnnouncementError(ValueError):
    """The announcement is missing, malformed, or not signed by the coordinator's provider."""


def message(session_id: str, agreement_id: str, url: str, fingerprint: str) -> str:
    """The text the coordinator's provider signs."""
    return (
        f"{SCHEME}\nsession: {session_id}\nagreement: {agreement_id.lower()}\ngrpc: {url}\n"
        f"certificate-sha256: {fingerprint.lower()}"
    )


def sign(
    private_key: str, session_id: str, url: str, tls_cert: str, agreement: dict[str, Any]
) -> dict[str, Any]:
    """The announcement of a coordinator serving ``tls_cert`` (PEM) at ``url`` (gRPC host:port) for the
    compute ``agreement`` (its terms, as :class:`~airflow_nevermined_fl.contracts.records.ComputeAgreement`'s
    ``to_dict``)."""
    text = message(session_id, agreement["agreement_id"], url, certificate_fingerprint(tls_cert))
    signature = Account.sign_message(encode_defunct(text=text), private_key).signature.hex()
    fields = {"session_id": session_id, "url": url, "tls_cert": tls_cert, "signature": signature}
    return {**fields, "agreement": agreement}


def agreement_of(announcement: Any) -> dict[str, Any]:
    """The agreement terms an announcement names (unverified: check them on chain, then :func:`verify`)."""
    terms = announcement.get("agreement") if isinstance(announcement, dict) else None
    if not isinstance(terms, dict) or not isinstance(terms.get("agreement_id"), str):
        raise AnnouncementError("names no agreement: expected agreement.agreement_id")
    return terms


def verify(announcement: Any, *, provider: str, session_id: str) -> dict[str, Any]:
    """The announcement, if ``provider`` signed it for ``session_id`` and its agreement;
    :class:`AnnouncementError` names what is wrong otherwise."""
    if not isinstance(announcement, dict) or not all(isinstance(announcement.get(k), str) for k in FIELDS):
        raise AnnouncementError(f"expected an object with {', '.join(FIELDS)}")
    if announcement["session_id"] != session_id:
        raise AnnouncementError(f"for session {announcement['session_id']!r}, not {session_id!r}")
    agreement = agreement_of(announcement)
    try:
        fingerprint = certificate_fingerprint(announcement["tls_cert"])
        text = message(session_id, agreement["agreement_id"], announcement["url"], fingerprint)
        signature = bytes.fromhex(announcement["signature"].removeprefix("0x"))
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # noqa: BLE001 - any malformed field is the same refusal
        raise AnnouncementError(f"malformed ({type(exc).__name__})") from None
    if signer.lower() != provider.lower():
        raise AnnouncementError(f"signed by {signer}, not by the coordinator's provider {provider}")
    return {**{k: announcement[k] for k in FIELDS}, "agreement": agreement}
