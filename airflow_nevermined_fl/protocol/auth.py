"""Signed gateway requests: the consumer proves its address with an EIP-191 signature.

The signed text binds the gateway it is for (:class:`Audience`: chain id, provider address and public
URL; a signature for one gateway or chain is useless at another), the method, the path, the canonical
query string, the body's SHA-256, a timestamp and a random nonce. The gateway accepts a request only within
``max_age`` seconds of its timestamp and only once per nonce (replay protection: a :class:`NonceGuard`,
persistent at a gateway so that a restart forgets nothing).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3

SCHEME = "nvfl-gateway-auth/2"
HEADERS = ("X-Nvfl-Address", "X-Nvfl-Timestamp", "X-Nvfl-Nonce", "X-Nvfl-Signature")
MAX_FUTURE_SKEW = 30.0


class AuthError(PermissionError):
    """The request's signature is missing, malformed, expired, replayed or not the claimed signer's."""


def canonical_url(url: str) -> str:
    """``scheme://host[:port][/path]``, scheme and host lowercased, without a trailing slash."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def canonical_query(query: str | Mapping[str, object]) -> str:
    """A query string (raw, or parameters) with its pairs sorted: what is signed and what is sent."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query.items()
    return urlencode(sorted((str(k), str(v)) for k, v in pairs))


@dataclass(frozen=True)
class Audience:
    """The gateway a signature is for: its chain, its provider's address and its public URL."""

    chain_id: int
    address: str
    url: str

    def lines(self) -> list[str]:
        return [
            f"chain-id: {self.chain_id}",
            f"gateway: {self.address.lower()}",
            f"url: {canonical_url(self.url)}",
        ]


def message(
    method: str, path: str, query: str, audience: Audience, body: bytes, timestamp: int, nonce: str
) -> str:
    """The text a consumer signs for one request (``query``: canonical, :func:`canonical_query`)."""
    return "\n".join(
        [
            SCHEME,
            *audience.lines(),
            f"{method.upper()} {path}",
            f"query: {query}",
            f"body-sha256: {hashlib.sha256(body).hexdigest()}",
            f"timestamp: {timestamp}",
            f"nonce: {nonce}",
        ]
    )


def signed_headers(
    sign: Callable[[str], str],
    address: str,
    method: str,
    path: str,
    audience: Audience,
    body: bytes = b"",
    query: str = "",
) -> dict[str, str]:
    """Headers authenticating one request; ``sign`` returns the EIP-191 signature of a text."""
    timestamp, nonce = int(time.time()), secrets.token_hex(16)
    signature = sign(message(method, path, canonical_query(query), audience, body, timestamp, nonce))
    return dict(zip(HEADERS, (address, str(timestamp), nonce, signature), strict=True))


def missing_headers(headers: Mapping[str, str]) -> list[str]:
    """The signature headers a request lacks (checked before its body is read)."""
    return [name for name in HEADERS if not headers.get(name)]


class NonceGuard(Protocol):
    def claim(self, nonce: str, expires: float) -> bool:
        """True the first time ``nonce`` is claimed before it expires."""
        ...


class ReplayGuard:
    """Nonces seen within their validity window, in memory (thread-safe, pruned as they expire)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, nonce: str, expires: float) -> bool:
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
    query: str,
    audience: Audience,
    body: bytes,
    guard: NonceGuard,
    max_age: float,
) -> str:
    """The checksummed address that signed this request; :class:`AuthError` saying why not."""
    missing = missing_headers(headers)
    if missing:
        raise AuthError(f"unsigned request: missing header(s) {', '.join(missing)}")
    address, timestamp_text, nonce, signature = (str(headers[name]) for name in HEADERS)
    if not Web3.is_address(address):
        raise AuthError("X-Nvfl-Address: not an address")
    if not timestamp_text.isdigit() or not 16 <= len(nonce) <= 64:
        raise AuthError("X-Nvfl-Timestamp/X-Nvfl-Nonce: malformed")
    timestamp, now = int(timestamp_text), time.time()
    if timestamp > now + MAX_FUTURE_SKEW:
        raise AuthError("signature timestamp is in the future")
    if timestamp < now - max_age:
        raise AuthError(f"signature expired (older than {max_age:.0f}s)")
    text = message(method, path, canonical_query(query), audience, body, timestamp, nonce)
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:
        raise AuthError("X-Nvfl-Signature: malformed signature") from None
    if signer.lower() != address.lower():
        raise AuthError("invalid signature: not signed by X-Nvfl-Address for this request")
    if not guard.claim(f"{signer.lower()}/{nonce}", timestamp + max_age + MAX_FUTURE_SKEW):
        raise AuthError("replayed request: this signature was already used")
    return Web3.to_checksum_address(signer)
