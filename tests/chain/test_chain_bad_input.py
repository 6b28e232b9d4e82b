"""Each bad input fails with a clear error before any transaction, and no error carries a key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_nevermined_fl import process
from airflow_nevermined_fl.contracts import ChainUnreachableError, DeploymentError, InvalidInputError
from airflow_nevermined_fl.contracts.client import Signer, connect
from airflow_nevermined_fl.contracts.deployment import load_deployment, mint
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.hooks.nevermined import ComputeAgreement, NeverminedHook

TOKEN = 10**18


@pytest.fixture(scope="module")
def actors(devchain: dict[str, Any]) -> dict[str, Any]:
    consumer, provider = NeverminedHook("nevermined_consumer"), NeverminedHook("nevermined_provider_1")
    session = uuid.uuid4().hex
    seed = provider.did_seed(session, "data")
    asset = provider.register_did(seed, "0x" + "01" * 32, [provider.address], "http://127.0.0.1/ddo")
    return {"consumer": consumer, "provider": provider, "asset": asset, "session": session, "seed": seed}


def rejects(tools: Any, account: str, error: type[Exception], match: str, call: Callable[[], Any]) -> str:
    """``call`` raises ``error`` matching ``match``, sends no transaction, and leaks no key."""
    nonce = tools.nonce(account)
    with pytest.raises(error, match=match) as info:
        call()
    assert tools.nonce(account) == nonce
    message = str(info.value)
    for key in tools.secret_keys():
        assert key not in message
    return message


def agreement_args(actors: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    consumer, provider = actors["consumer"], actors["provider"]
    args = {
        "seed": consumer.agreement_seed(uuid.uuid4().hex, provider.address),
        "did": actors["asset"].did,
        "provider": provider.address,
        "amount": TOKEN,
    }
    return args | overrides


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"did": "did:nv:" + "99" * 32}, "did: unknown DID"),
        ({"did": "not-a-did"}, "did: expected 32 bytes"),
        ({"amount": [TOKEN, TOKEN]}, "amounts/receivers: 2 amounts but 1 receivers"),
        ({"amount": TOKEN, "receivers": []}, "amounts/receivers: 1 amounts but 0 receivers"),
        ({"amount": 0}, r"amounts\[0\]: expected a positive integer"),
        ({"amount": -5}, r"amounts\[0\]: expected a positive integer"),
        ({"amount": [TOKEN, -1], "receivers": None}, r"amounts\[1\]"),
        ({"amount": True}, r"amounts\[0\]"),
        ({"amount": 10**9 * TOKEN}, "insufficient token balance"),
        ({"provider": "0x1234"}, "provider: expected an address"),
        ({"provider": "0x" + "11" * 20}, "neither owner nor a provider"),
        ({"seed": "xyz"}, "seed: expected 32 bytes"),
        ({"time_out": -1}, "time_out: expected a non-negative integer"),
    ],
)
def test_create_agreement_rejects(
    actors: dict[str, Any], tools: Any, overrides: dict[str, Any], match: str
) -> None:
    consumer = actors["consumer"]
    rejects(
        tools,
        consumer.address,
        InvalidInputError,
        match,
        lambda: consumer.create_compute_agreement(**agreement_args(actors, **overrides)),
    )


def test_register_did_rejects_bad_fields_and_conflicts(actors: dict[str, Any], tools: Any) -> None:
    provider = actors["provider"]
    ok = {
        "seed": actors["seed"],
        "checksum": "0x" + "01" * 32,
        "providers": [provider.address],
        "url": "http://127.0.0.1/ddo",
    }
    for field, value, match in [
        ("checksum", "abc", "checksum: expected 32 bytes"),
        ("providers", provider.address, "providers: expected a list"),
        ("providers", ["0xnope"], r"providers\[0\]: expected an address"),
        ("url", "", "url: expected a non-empty string"),
        ("checksum", "0x" + "02" * 32, "already registered with another checksum"),
    ]:
        rejects(
            tools,
            provider.address,
            InvalidInputError,
            match,
            lambda f=field, v=value: provider.register_did(**ok | {f: v}),
        )
    rejects(
        tools, provider.address, InvalidInputError, "unknown DID", lambda: provider.get_did("0x" + "77" * 32)
    )


def test_lock_payment_rejects_insufficient_balance(
    devchain: dict[str, Any], actors: dict[str, Any], tools: Any
) -> None:
    """Two agreements the poorest consumer can afford one at a time: the second lock fails before any tx."""
    poor = NeverminedHook("nevermined_provider_3")
    owner = Signer(connect(devchain["rpc_url"]), chain.account(chain.OWNER))
    mint(owner, load_deployment(devchain["deployment_file"]), poor.address, 4 * TOKEN)
    session, asset, provider = actors["session"], actors["asset"], actors["provider"]
    first, second = (
        poor.create_compute_agreement(
            poor.agreement_seed(f"{session}-{n}", provider.address), asset.did, provider.address, 3 * TOKEN
        )
        for n in (1, 2)
    )
    assert poor.lock_payment(first)
    rejects(
        tools,
        poor.address,
        InvalidInputError,
        "insufficient token balance",
        lambda: poor.lock_payment(second),
    )


def test_agreement_from_xcom_is_checked(actors: dict[str, Any], tools: Any) -> None:
    consumer, provider = actors["consumer"], actors["provider"]
    agreement = consumer.create_compute_agreement(**agreement_args(actors))
    tampered = agreement.to_dict() | {"amounts": [5 * TOKEN]}
    rejects(
        tools,
        consumer.address,
        InvalidInputError,
        "ids do not match",
        lambda: consumer.lock_payment(tampered),
    )
    missing = {k: v for k, v in agreement.to_dict().items() if k != "lock_condition_id"}
    rejects(
        tools, consumer.address, InvalidInputError, "missing fields", lambda: consumer.lock_payment(missing)
    )
    never_created = ComputeAgreement.from_dict(
        consumer._agreement(
            bytes(32),
            bytes.fromhex(agreement.did[7:]),
            consumer.address,
            provider.address,
            [TOKEN],
            [provider.address],
            0,
            0,
        ).to_dict()
    )
    rejects(
        tools,
        consumer.address,
        InvalidInputError,
        "does not exist",
        lambda: consumer.lock_payment(never_created),
    )
    rejects(
        tools,
        provider.address,
        InvalidInputError,
        "not this connection's account",
        lambda: provider.lock_payment(agreement),
    )


def test_provenance_rejects_bad_input(actors: dict[str, Any], tools: Any) -> None:
    consumer, asset = actors["consumer"], actors["asset"]
    model = consumer.register_did(
        consumer.did_seed(actors["session"], "model"), "0x" + "03" * 32, [], "http://x/m"
    ).did
    for args, match in [
        ((model, [], "fl"), "derived_from: expected a non-empty list"),
        ((model, [asset.did], ""), "activity: expected a non-empty string"),
        (("did:nv:" + "42" * 32, [asset.did], "fl"), "unknown DID"),
        ((model, [asset.did], "fl"), "not owner, provider or delegate"),
    ]:
        rejects(
            tools, consumer.address, InvalidInputError, match, lambda a=args: consumer.record_provenance(*a)
        )


def connection(monkeypatch: pytest.MonkeyPatch, devchain: dict[str, Any], **changes: Any) -> NeverminedHook:
    """A hook on a connection derived from the consumer's, with ``changes`` (extra keys merged)."""
    extra = {"deployment_file": devchain["deployment_file"], "chain_id": devchain["chain_id"]}
    extra |= changes.pop("extra", {})
    conn = {
        "conn_type": "nevermined",
        "host": devchain["rpc_url"],
        "password": chain.account(chain.CONSUMER).key.to_0x_hex(),
    }
    conn_id = f"nvm_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn | changes | {"extra": extra}))
    return NeverminedHook(conn_id)


def test_connection_errors(
    devchain: dict[str, Any], tools: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = json.loads(Path(devchain["deployment_file"]).read_text())
    other_chain = tmp_path / "other-chain.json"
    other_chain.write_text(json.dumps(deployment | {"chain_id": 5}))
    no_token = tmp_path / "no-token.json"
    no_token.write_text(
        json.dumps(
            deployment
            | {"contracts": {k: v for k, v in deployment["contracts"].items() if k != "NeverminedToken"}}
        )
    )
    bad_address = tmp_path / "bad-address.json"
    contracts = deployment["contracts"] | {
        "DIDRegistry": deployment["contracts"]["DIDRegistry"] | {"address": "0x12"}
    }
    bad_address.write_text(json.dumps(deployment | {"contracts": contracts}))
    no_code = tmp_path / "no-code.json"
    contracts = deployment["contracts"] | {
        "DIDRegistry": deployment["contracts"]["DIDRegistry"] | {"address": "0x" + "ee" * 20}
    }
    no_code.write_text(json.dumps(deployment | {"contracts": contracts}))
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{not json")
    dead_url = f"http://127.0.0.1:{process.free_port()}"
    consumer = chain.account(chain.CONSUMER).address
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"extra": {"chain_id": 1}}, DeploymentError, "wrong chain id: connection chain_id is 1"),
        (
            {"extra": {"deployment_file": str(other_chain)}},
            DeploymentError,
            "wrong chain id: deployment chain_id is 5",
        ),
        ({"extra": {"deployment_file": str(tmp_path / "missing.json")}}, DeploymentError, "does not exist"),
        ({"extra": {"deployment_file": str(malformed)}}, DeploymentError, "is not valid JSON"),
        (
            {"extra": {"deployment_file": str(no_token)}},
            DeploymentError,
            "contract NeverminedToken is missing",
        ),
        (
            {"extra": {"deployment_file": str(bad_address)}},
            DeploymentError,
            "DIDRegistry.address is not an address",
        ),
        ({"extra": {"deployment_file": str(no_code)}}, DeploymentError, "no contract code for DIDRegistry"),
        ({"extra": {"deployment_file": None}}, DeploymentError, "needs 'deployment_file' or 'addresses'"),
        (
            {"host": dead_url, "extra": {"rpc_retries": 2}},
            ChainUnreachableError,
            f"{dead_url} unreachable after 2 attempts",
        ),
        ({"password": "not-a-key"}, InvalidInputError, "password: expected a 32-byte hex private key"),
        ({"password": ""}, InvalidInputError, "password .* is empty"),
        ({"extra": {"rpc_retries": "many"}}, InvalidInputError, "rpc_retries must be a positive integer"),
        ({"extra": {"chain_id": "31337"}}, InvalidInputError, "chain_id must be an integer"),
    ]
    for changes, error, match in cases:
        hook = connection(monkeypatch, devchain, **changes)
        message = rejects(tools, consumer, error, match, lambda h=hook: h.token_balance(consumer))
        assert "not-a-key" not in message
        ok, text = hook.test_connection()
        assert not ok and text == message


def test_inline_addresses_instead_of_a_deployment_file(
    devchain: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    addresses = load_deployment(devchain["deployment_file"]).addresses
    hook = connection(monkeypatch, devchain, extra={"deployment_file": None, "addresses": addresses})
    assert hook.token_balance(hook.address) == NeverminedHook("nevermined_consumer").token_balance(
        hook.address
    )
    assert hook.test_connection() == (True, f"chain {devchain['chain_id']}, account {hook.address}")
