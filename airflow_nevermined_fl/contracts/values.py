"""Chain values: conversions and checks of hashes, addresses, DIDs and amounts (no RPC).

Each check raises :class:`~airflow_nevermined_fl.contracts.errors.InvalidInputError` naming ``field``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_abi import encode
from web3 import Web3

from airflow_nevermined_fl.contracts.errors import InvalidInputError

DID_PREFIX = "did:nv:"


def keccak_abi(types: list[str], values: list[Any]) -> bytes:
    """keccak256 of the ABI encoding, as Solidity's ``keccak256(abi.encode(...))``."""
    return Web3.keccak(encode(types, values))


def seed_id(seed: bytes, creator: str) -> bytes:
    """The id a contract derives from a seed and its creator (``hashDID``, agreement ids)."""
    return keccak_abi(["bytes32", "address"], [seed, creator])


def bytes32(value: str | bytes, field: str) -> bytes:
    """``0x``-prefixed or bare 64-hex string, or 32 raw bytes."""
    if isinstance(value, bytes | bytearray) and len(value) == 32:
        return bytes(value)
    if isinstance(value, str):
        text = value.removeprefix("0x")
        if len(text) == 64:
            try:
                return bytes.fromhex(text)
            except ValueError:
                pass
    raise InvalidInputError(f"{field}: expected 32 bytes as 64 hex characters, got {value!r}")


def hex_str(value: bytes) -> str:
    return "0x" + value.hex()


def address_of(value: Any, field: str) -> str:
    """The checksummed address."""
    if not isinstance(value, str) or not Web3.is_address(value):
        raise InvalidInputError(f"{field}: expected an address (0x + 40 hex), got {value!r}")
    return Web3.to_checksum_address(value)


def did_bytes(did: str | bytes, field: str = "did") -> bytes:
    """The 32 bytes of a DID given as ``did:nv:<hex>``, hex or bytes."""
    if isinstance(did, str) and did.startswith(DID_PREFIX):
        return bytes32(did[len(DID_PREFIX) :], field)
    return bytes32(did, field)


def did_str(did: bytes) -> str:
    return DID_PREFIX + did.hex()


def positive_amounts(amount: int | Sequence[int]) -> list[int]:
    """One amount or a non-empty sequence of them, each a positive integer."""
    amounts = [amount] if isinstance(amount, int) else list(amount)
    if not amounts:
        raise InvalidInputError("amounts: expected at least one amount")
    for i, value in enumerate(amounts):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInputError(f"amounts[{i}]: expected a positive integer, got {value!r}")
    return amounts


def non_negative_blocks(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{field}: expected a non-negative integer number of blocks, got {value!r}")
    return value
