"""The secure session channel: the coordinator's pinned certificate and the seats of its data providers.

A data provider's gateway hands its participant a *ticket*: the provider's EIP-191 signature over
``nvfl-seat/1``, the session id and the coordinator's certificate fingerprint (so a ticket is useless in
another session or with another coordinator). The participant sends it with every gRPC call; the
coordinator recovers the signer, admits only the providers of its session config, and at the rendezvous
gives the seat a fresh *token* that every later call must carry too: a copied ticket cannot take a seat
already held, nor act for its holder. Identity is the provider, never the peer address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import ssl
import threading
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_defunct

from airflow_nevermined_fl.runtime.config import SeatSpec

SCHEME = "nvfl-seat/1"
TLS_NAME = "nvfl-coordinator"
"""The name a session certificate is issued for; participants check it instead of the coordinator's host."""
TICKET_HEADER = "nvfl-seat"
TOKEN_HEADER = "nvfl-seat-token"
MAX_TICKET = 256


class SeatRefused(PermissionError):
    """A call without a valid credential for a free (or its own) seat; the message says why."""


def certificate_fingerprint(pem: str) -> str:
    """SHA-256 (hex) of a PEM certificate's DER bytes; ValueError if it is not one."""
    try:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM certificate ({exc})") from None


def seat_message(session_id: str, fingerprint: str) -> str:
    """The text a data provider signs to let its participant into one session."""
    return f"{SCHEME}\nsession: {session_id}\ncoordinator-certificate-sha256: {fingerprint.lower()}"


def issue(private_key: str, session_id: str, fingerprint: str) -> str:
    """A ticket for the provider whose key this is: ``<address>.<signature hex>`` (secret: a bearer
    credential until its seat is taken)."""
    signed = Account.sign_message(encode_defunct(text=seat_message(session_id, fingerprint)), private_key)
    return f"{Account.from_key(private_key).address.lower()}.{signed.signature.hex().removeprefix('0x')}"


def participant_id(address: str) -> str:
    """The id a seat's participant goes by in the session (its upload's name): from the provider address."""
    return "p-" + address.lower().removeprefix("0x")


@dataclass
class _Seat:
    spec: SeatSpec
    token: str | None = None


class Seats:
    """The session's seats: who may join, who holds a seat now.

    A ticket's signature is recovered once, outside the seats' lock: the verified ones are kept (ticket ->
    provider), and the last refused ones too (ticket -> reason, at most ``MAX_REFUSED``), so a repeated
    call costs a dictionary look-up."""

    MAX_REFUSED = 4096

    def __init__(self, session_id: str, fingerprint: str, seats: tuple[SeatSpec, ...]) -> None:
        self.message = encode_defunct(text=seat_message(session_id, fingerprint))
        self._seats = {seat.address.lower(): _Seat(seat) for seat in seats}
        self._verified: dict[str, str] = {}  # ticket -> address: recovery is slow, heartbeats are many
        self._refused: dict[str, str] = {}  # ticket -> reason
        self._lock = threading.Lock()

    def known(self, ticket: str | None) -> bool:
        """Whether ``ticket`` is a verified seat credential (no recovery needed)."""
        return bool(ticket) and ticket in self._verified

    def _provider(self, ticket: str | None) -> _Seat:
        if not ticket:
            raise SeatRefused("no seat credential")
        address = self._verified.get(ticket)
        if address is None:
            refused = self._refused.get(ticket) or self._recover(ticket)
            if refused:
                if len(self._refused) >= self.MAX_REFUSED:
                    self._refused.clear()
                self._refused[ticket] = refused
                raise SeatRefused(refused)
            address = self._verified[ticket]
        return self._seats[address]

    def _recover(self, ticket: str) -> str | None:
        """Verify a new ticket (record it when it is a seat's); the reason it is refused, or None."""
        claimed, _, signature = ticket.partition(".")
        try:
            if len(ticket) > MAX_TICKET:
                raise ValueError("too long")
            address = Account.recover_message(self.message, signature=bytes.fromhex(signature)).lower()
        except Exception:  # noqa: BLE001 - any malformed ticket is refused the same way
            return "malformed seat credential"
        if address != claimed.lower():
            return f"seat credential not signed by {claimed[:42]} (wrong session or key)"
        if address not in self._seats:
            return f"{address} has no seat in this session"
        self._verified[ticket] = address
        return None

    def take(self, ticket: str | None) -> tuple[str, str]:
        """Rendezvous: ``(participant id, new token)`` for a free seat; refused when the seat is held."""
        seat = self._provider(ticket)
        with self._lock:
            if seat.token is not None:
                raise SeatRefused(f"the seat of {seat.spec.address} is already taken (duplicate credential)")
            seat.token = secrets.token_urlsafe(24)
            return participant_id(seat.spec.address), seat.token

    def check(self, ticket: str | None, token: str | None) -> str:
        """Any later call: the participant id of the seat this ticket and token hold."""
        seat = self._provider(ticket)
        with self._lock:
            if seat.token is None:
                raise SeatRefused(f"the seat of {seat.spec.address} is not taken: rendezvous first")
            if not token or not hmac.compare_digest(token, seat.token):
                raise SeatRefused(f"wrong seat token for {seat.spec.address} (the seat is held by another)")
            return participant_id(seat.spec.address)

    def release(self, participant: str) -> None:
        """Free a removed participant's seat (its provider may join again)."""
        with self._lock:
            for seat in self._seats.values():
                if participant_id(seat.spec.address) == participant:
                    seat.token = None

    def max_samples(self, participant: str) -> int:
        for seat in self._seats.values():
            if participant_id(seat.spec.address) == participant:
                return seat.spec.max_samples
        raise KeyError(participant)
