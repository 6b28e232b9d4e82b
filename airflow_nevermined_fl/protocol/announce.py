"""The coordinator's announcement: where a session's coordinator serves and the certificate it serves,
signed (EIP-191) by the coordinator's provider.

The coordinator's gateway signs it once the coordinator serves; the consumer copies it into the coordinator
workflow DDO; each data provider's gateway checks the signature against the provider that DDO names (the
DDO is chain-anchored by its registered checksum) before it launches a participant, which then trusts that
certificate only. Neither the consumer nor whoever can write the DDO's storage can point participants at
another coordinator.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from airflow_nevermined_fl.runtime.channel import certificate_fingerprint

SCHEME = "nvfl-coordinator/1"
FIELDS = ("session_id", "url", "tls_cert", "signature")


class AnnouncementError(ValueError):
    """The announcement is missing, malformed, or not signed by the coordinator's provider."""


def message(session_id: str, url: str, fingerprint: str) -> str:
    """The text the coordinator's provider signs."""
    return f"{SCHEME}\nsession: {session_id}\ngrpc: {url}\ncertificate-sha256: {fingerprint.lower()}"


def sign(private_key: str, session_id: str, url: str, tls_cert: str) -> dict[str, str]:
    """The announcement of a coordinator serving ``tls_cert`` (PEM) at ``url`` (gRPC host:port)."""
    text = message(session_id, url, certificate_fingerprint(tls_cert))
    signature = Account.sign_message(encode_defunct(text=text), private_key).signature.hex()
    return {"session_id": session_id, "url": url, "tls_cert": tls_cert, "signature": signature}


def verify(announcement: Any, *, provider: str, session_id: str) -> dict[str, str]:
    """The announcement, if ``provider`` signed it for ``session_id``; :class:`AnnouncementError` names
    what is wrong otherwise."""
    if not isinstance(announcement, dict) or not all(isinstance(announcement.get(k), str) for k in FIELDS):
        raise AnnouncementError(f"expected an object with {', '.join(FIELDS)}")
    if announcement["session_id"] != session_id:
        raise AnnouncementError(f"for session {announcement['session_id']!r}, not {session_id!r}")
    try:
        fingerprint = certificate_fingerprint(announcement["tls_cert"])
        text = message(session_id, announcement["url"], fingerprint)
        signature = bytes.fromhex(announcement["signature"].removeprefix("0x"))
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # noqa: BLE001 - any malformed field is the same refusal
        raise AnnouncementError(f"malformed ({type(exc).__name__})") from None
    if signer.lower() != provider.lower():
        raise AnnouncementError(f"signed by {signer}, not by the coordinator's provider {provider}")
    return {k: announcement[k] for k in FIELDS}
