"""Token units and base units: exact conversions, bad amounts refused naming the field, and the token's
decimals and symbol read from the deployed NeverminedToken (once per connection)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from airflow_nevermined_fl.contracts.errors import InvalidInputError
from airflow_nevermined_fl.contracts.units import (
    Token,
    parse_tokens,
    positive_tokens,
    read_token,
    to_base,
    to_tokens,
    tokens_str,
)

BIG = "123456789012345678901234567890.123456789012345678"  # more digits than a default Decimal context


@pytest.mark.parametrize(
    ("amount", "decimals", "base"),
    [
        ("5", 18, 5 * 10**18),
        ("0.25", 18, 25 * 10**16),
        ("0.25", 6, 250_000),
        (5, 6, 5_000_000),
        (0.1, 18, 10**17),  # a JSON number, read through its text: not the float's binary value
        (Decimal("1E+3"), 6, 10**9),
        ("7.500", 1, 75),  # trailing zeros are no extra precision
        ("0.000001", 6, 1),
        ("0.000000000000000001", 18, 1),
        ("0", 18, 0),
        (BIG, 18, int(BIG.replace(".", ""))),
    ],
)
def test_to_base_is_exact(amount: Any, decimals: int, base: int) -> None:
    assert to_base(amount, decimals) == base
    assert to_tokens(base, decimals) == Decimal(str(amount))


def test_to_tokens_is_exact_and_plain() -> None:
    assert str(to_tokens(25 * 10**18, 18)) == "25"
    assert str(to_tokens(250_000, 6)) == "0.25"
    assert str(to_tokens(1, 18)) == "1E-18" and tokens_str(to_tokens(1, 18)) == "0.000000000000000001"
    assert tokens_str(to_tokens(int(BIG.replace(".", "")), 18)) == BIG
    assert str(to_tokens(5, 0)) == "5" and str(to_tokens(0, 6)) == "0"
    assert tokens_str(Decimal("5E+2")) == "500" and tokens_str(Decimal("0.2500")) == "0.25"
    assert positive_tokens("007.50", "x") == "7.5" and positive_tokens(1e-7, "x") == "0.0000001"


def test_token_formats_base_units_for_people() -> None:
    nvm, usdc = Token("NVM", 18), Token("USDC", 6)
    assert nvm.format(5 * 10**18) == "5 NVM" and nvm.format(25 * 10**16) == "0.25 NVM"
    assert usdc.format(250_000) == "0.25 USDC" and usdc.text(10**12) == "1000000"
    assert nvm.base("2.5") == 25 * 10**17 and usdc.base("2.5") == 2_500_000


@pytest.mark.parametrize(
    ("amount", "decimals", "message"),
    [
        ("0.0000001", 6, "services[0].price: 0.0000001 has more decimals than the token's 6"),
        ("0.0000000000000000001", 18, "services[0].price: 0.0000000000000000001 has more decimals"),
        ("0.5", 0, "services[0].price: 0.5 has more decimals than the token's 0"),
        ("-1", 18, "services[0].price: expected a non-negative number of tokens"),
        (-1, 18, "services[0].price: expected a non-negative number of tokens"),
        (float("nan"), 18, "services[0].price: expected a non-negative number of tokens"),
        (Decimal("NaN"), 18, "services[0].price: expected a non-negative number of tokens"),
        (float("inf"), 18, "services[0].price: expected a non-negative number of tokens"),
        ("1e3", 18, "services[0].price: expected a non-negative number of tokens"),
        (" 5", 18, "services[0].price: expected a non-negative number of tokens"),
        ("", 18, "services[0].price: expected a non-negative number of tokens"),
        (True, 18, "services[0].price: expected a non-negative number of tokens"),
        (None, 18, "services[0].price: expected a non-negative number of tokens"),
        ("5", -1, "decimals: expected an integer from 0 to 255"),
    ],
)
def test_bad_amounts_name_the_field(amount: Any, decimals: int, message: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        to_base(amount, decimals, "services[0].price")
    assert str(err.value).startswith(message), str(err.value)


def test_zero_is_an_amount_but_not_a_price() -> None:
    assert parse_tokens("0", "balance") == 0
    with pytest.raises(InvalidInputError, match="max_price: expected a positive number of tokens, got '0.0'"):
        positive_tokens("0.0", "max_price")


def test_decimals_and_symbol_come_from_the_deployed_token(devchain: dict[str, Any]) -> None:
    from airflow_nevermined_fl.devtools.devstack import chain
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

    hook = NeverminedHook("nevermined_consumer")
    token = hook.token
    assert token == Token("NVM", 18) == read_token(hook._c("NeverminedToken"))
    assert hook.token is token  # read once per connection
    # The devstack funds the consumer with whole tokens at the token's decimals.
    assert hook.token_balance(hook.address) <= token.base(chain.CONSUMER_TOKENS)
    assert hook.token_balance(hook.address) > token.base(chain.CONSUMER_TOKENS - 1000)
