"""Signed gateway requests: the consumer proves its address with an EIP-191 signature.

The signed text binds method, path, the gateway's provider address (the audience: a signature for one
gateway is useless at another), the body's SHA-256, a timestamp and a random nonce. The gateway accepts a
request only within ``max_age`` seconds of its timestamp and only once per nonce (replay protection).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping

from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3

SCHEME = "nvfl-gateway-auth/1"
HEADERS = ("X-Nvfl-Address", "X-Nvfl-Timestamp", "X-Nvfl-Nonce", "X-Nvfl-Signature")
MAX_FUTURE_SKEW = 30.0


class AuthError(PermissionError):
    """The request's signature is missing, malformed, expired, replayed or not the claimed signer's."""


def message(method: str, path: str, audience: str, body: bytes, timestamp: int, nonce: str) -> str:
    """The text a consumer signs for one request."""
    return "\n".join(
        [
            SCHEME,
            f"{method.upper()} {path}",
            f"audience: {audience.lower()}",
            f"body-sha256: {hashlib.sha256(body).hexdigest()}",
            f"timestamp: {timestamp}",
            f"nonce: {nonce}",
        ]
    )


def signed_headers(
    sign: Callable[[str], str], address: str, method: str, path: str, audience: str, body: bytes = b""
) -> dict[str, str]:
    """Headers authenticating one request; ``sign`` returns the EIP-191 signature of a text."""
    timestamp, nonce = int(time.time()), secrets.token_hex(16)
    signature = sign(message(method, path, audience, body, timestamp, nonce))
    return dict(zip(HEADERS, (address, str(timestamp), nonce, signature), strict=True))


class ReplayGuard:
    """Nonces seen within their validity window (thread-safe, pruned as they expire)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, nonce: str, expires: float) -> bool:
        """True the first time ``nonce`` is claimed before it expires."""
        now = time.time()
        with self._lock:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
            if nonce in self._seen:
                return False
            self._seen[nonce] = expires
            return True


def verify(
    headers: Mapping[str, str],
    method: str,
    path: str,
    audience: str,
    body: bytes,
    guard: ReplayGuard,
    max_age: float,
) -> str:
    """The checksummed address that signed this request; :class:`AuthError` saying why not."""
    values = [headers.get(name) for name in HEADERS]
    if not all(values):
        missing = [name for name, value in zip(HEADERS, values, strict=True) if not value]
        raise AuthError(f"unsigned request: missing header(s) {', '.join(missing)}")
    address, timestamp_text, nonce, signature = (str(v) for v in values)
    if not Web3.is_address(address):
        raise AuthError("X-Nvfl-Address: not an address")
    if not timestamp_text.isdigit() or not 16 <= len(nonce) <= 64:
        raise AuthError("X-Nvfl-Timestamp/X-Nvfl-Nonce: malformed")
    timestamp, now = int(timestamp_text), time.time()
    if timestamp > now + MAX_FUTURE_SKEW:
        raise AuthError("signature timestamp is in the future")
    if timestamp < now - max_age:
        raise AuthError(f"signature expired (older than {max_age:.0f}s)")
    text = message(method, path, audience, body, timestamp, nonce)
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:
        raise AuthError("X-Nvfl-Signature: malformed signature") from None
    if signer.lower() != address.lower():
        raise AuthError("invalid signature: not signed by X-Nvfl-Address for this request")
    if not guard.claim(f"{signer.lower()}/{nonce}", timestamp + max_age + MAX_FUTURE_SKEW):
        raise AuthError("replayed request: this signature was already used")
    return Web3.to_checksum_address(signer)
