"""Token amounts: token units where people read them, base units on the wire, converted exactly.

Prices in DDOs, the session conf, a gateway's config and every summary are in token units, written as a
plain decimal string (``"5"``, ``"0.25"``); JSON numbers are accepted on input and read through their
``str`` (``0.1`` is ``Decimal("0.1")``, never the float's binary value). Agreements, locks and balances on
chain are integers of base units: one token is ``10**decimals`` of them, ``decimals`` being the token
contract's ``decimals()``. Conversions use integer arithmetic only (no float, no decimal context
rounding); bad input raises :class:`~airflow_nevermined_fl.contracts.errors.InvalidInputError` naming
the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.contracts.errors import InvalidInputError

if TYPE_CHECKING:
    from web3.contract import Contract

AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")
MAX_DECIMALS = 255  # ERC20 decimals() is a uint8


def parse_tokens(value: Any, field: str) -> Decimal:
    """``value`` as a non-negative, finite number of tokens: a decimal string, an int, a Decimal or a
    float (through its ``str``)."""
    if isinstance(value, str):
        amount = Decimal(value) if AMOUNT.fullmatch(value) else None
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        amount = Decimal(str(value) if isinstance(value, float) else value)
    else:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise InvalidInputError(
            f'{field}: expected a non-negative number of tokens such as "5" or "0.25", got {value!r}'
        )
    return amount.copy_abs()  # -0 is 0


def tokens_str(amount: Decimal) -> str:
    """The plain decimal string of ``amount``: no exponent, no trailing zeros (``"500"``, ``"0.25"``)."""
    text = f"{amount:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def positive_tokens(value: Any, field: str) -> str:
    """``value`` (see :func:`parse_tokens`), more than zero, as its plain decimal string."""
    amount = parse_tokens(value, field)
    if amount == 0:
        raise InvalidInputError(f"{field}: expected a positive number of tokens, got {value!r}")
    return tokens_str(amount)


def _decimals(decimals: Any) -> int:
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
        raise InvalidInputError(f"decimals: expected an integer from 0 to {MAX_DECIMALS}, got {decimals!r}")
    return decimals


def to_base(amount: Decimal | str | int, decimals: int, field: str = "amount") -> int:
    """``amount`` tokens in base units, exactly; refuses an amount finer than one base unit."""
    _, digits, exponent = parse_tokens(amount, field).as_tuple()
    assert isinstance(exponent, int)  # finite
    units, shift = int("".join(map(str, digits))), exponent + _decimals(decimals)
    if shift >= 0:
        return units * 10**shift
    whole, rest = divmod(units, 10**-shift)
    if rest:
        raise InvalidInputError(f"{field}: {amount} has more decimals than the token's {decimals}")
    return whole


def to_tokens(base: int, decimals: int) -> Decimal:
    """``base`` base units in tokens, exactly, without trailing zeros."""
    if isinstance(base, bool) or not isinstance(base, int):
        raise InvalidInputError(f"base: expected an integer number of base units, got {base!r}")
    whole, fraction = divmod(abs(base), 10 ** _decimals(decimals))
    text = f"{whole}.{fraction:0{decimals}d}".rstrip("0").rstrip(".") if decimals else str(whole)
    return Decimal(text if base >= 0 else "-" + text)


@dataclass(frozen=True)
class Token:
    """An ERC20 token's ``symbol`` and ``decimals``: converts and formats its amounts."""

    symbol: str
    decimals: int

    def base(self, amount: Decimal | str | int, field: str = "amount") -> int:
        return to_base(amount, self.decimals, field)

    def text(self, base: int) -> str:
        """``base`` base units in tokens, as a plain decimal string (``"0.25"``)."""
        return tokens_str(to_tokens(base, self.decimals))

    def format(self, base: int) -> str:
        """``base`` base units for people: ``"5 NVM"``, ``"0.25 NVM"``."""
        return f"{self.text(base)} {self.symbol}"


def read_token(contract: Contract) -> Token:
    """The ERC20 ``symbol()`` and ``decimals()`` of the token ``contract`` (two calls)."""
    decimals = int(contract.functions.decimals().call())
    return Token(symbol=str(contract.functions.symbol().call()), decimals=_decimals(decimals))
