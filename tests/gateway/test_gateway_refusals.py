"""Every refusal of ``execute``: a clear error naming what is wrong, and nothing launched (no execution
record, no workload directory). The requests are otherwise valid: the one flaw is what is refused."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from gatewaystack import Consumer, Gateway

from airflow_nevermined_fl.contracts.client import connect
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.gateway.channel import key_pair
from airflow_nevermined_fl.protocol import API, announce, auth
from airflow_nevermined_fl.protocol.client import GatewayClient, GatewayError


def _signer(account: Any) -> Callable[[str], str]:
    return lambda text: account.sign_message(encode_defunct(text=text)).signature.to_0x_hex()


@pytest.fixture
def order(
    consumer: Consumer, coordinator_gw: Gateway, data_gw: Gateway, manifest: dict[str, Any], session_id: str
) -> dict[str, Any]:
    """A paid agreement on the coordinator asset and its workflow: a valid execute request."""
    seats = [data_gw.asset("provider-1-s3")["did"]]
    workflow = consumer.coordinator_workflow(coordinator_gw, session_id, data.softmax_model(manifest), seats)
    return {"agreement": consumer.agreement(coordinator_gw, "coordinator"), "workflow_did": workflow}


def _request(order: dict[str, Any]) -> tuple[str, bytes]:
    return f"{API}/compute/execute/{order['agreement']['agreement_id']}", json.dumps(order).encode()


def _refused(gateway: Gateway, order: dict[str, Any], status: int, detail: str, answer: Any) -> None:
    """``answer`` (a response or a GatewayError) refused with ``status`` and ``detail``; nothing launched."""
    if isinstance(answer, httpx.Response):
        code, text = answer.status_code, answer.json()["detail"]
    else:
        code, text = answer.status_code, answer.detail
    assert (code, detail in text) == (status, True), f"HTTP {code}: {text}"
    assert gateway.nothing_launched(order["agreement"]["agreement_id"])


def _execute_error(client: GatewayClient, order: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        client.execute(order["agreement"], order["workflow_did"])
    return err.value


def test_unsigned_request(coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]) -> None:
    path, body = _request(order)
    answer = consumer.raw(coordinator_gw, "POST", path, body, {"Content-Type": "application/json"})
    _refused(coordinator_gw, order, 401, "unsigned request: missing header(s) X-Nvfl-Address", answer)


def test_invalid_signature(
    coordinator_gw: Gateway, data_gw: Gateway, consumer: Consumer, order: dict[str, Any]
) -> None:
    forged = consumer.client(coordinator_gw, sign=_signer(Account.create()))  # claims the consumer's address
    _refused(coordinator_gw, order, 401, "invalid signature", _execute_error(forged, order))
    path, body = _request(order)  # the consumer's own signature, but for another gateway
    headers = auth.signed_headers(
        consumer.keeper.sign_message, consumer.address, "POST", path, consumer.audience(data_gw), body
    )
    answer = consumer.raw(coordinator_gw, "POST", path, body, headers)
    _refused(coordinator_gw, order, 401, "invalid signature", answer)


def test_expired_signature(coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]) -> None:
    path, body = _request(order)
    timestamp, nonce = int(time.time()) - 3600, secrets.token_hex(16)
    text = auth.message("POST", path, "", consumer.audience(coordinator_gw), body, timestamp, nonce)
    headers = dict(
        zip(
            auth.HEADERS,
            (consumer.address, str(timestamp), nonce, consumer.keeper.sign_message(text)),
            strict=True,
        )
    )
    answer = consumer.raw(coordinator_gw, "POST", path, body, headers)
    _refused(coordinator_gw, order, 401, "signature expired (older than 60s)", answer)


def test_replayed_signature(coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]) -> None:
    order["agreement"] = consumer.agreement(coordinator_gw, "coordinator", lock=False)
    path, body = _request(order)
    headers = auth.signed_headers(
        consumer.keeper.sign_message, consumer.address, "POST", path, consumer.audience(coordinator_gw), body
    )
    first = consumer.raw(coordinator_gw, "POST", path, body, headers)
    _refused(coordinator_gw, order, 409, "is not locked", first)
    again = consumer.raw(coordinator_gw, "POST", path, body, headers)
    _refused(coordinator_gw, order, 401, "replayed request", again)


def test_signer_not_the_consumer(coordinator_gw: Gateway, order: dict[str, Any]) -> None:
    other = Account.create()
    client = GatewayClient(
        coordinator_gw.endpoint,
        audience=coordinator_gw.address,
        address=other.address,
        sign=_signer(other),
        chain_id=chain.CHAIN_ID,
    )
    _refused(
        coordinator_gw,
        order,
        403,
        f"signer {other.address} is not the agreement's consumer",
        _execute_error(client, order),
    )


def test_agreement_for_another_providers_asset(
    coordinator_gw: Gateway, data_gw: Gateway, consumer: Consumer, order: dict[str, Any]
) -> None:
    order["agreement"] = consumer.agreement(data_gw, "provider-1")
    error = _execute_error(consumer.client(coordinator_gw), order)
    _refused(coordinator_gw, order, 403, "agreement for another provider's asset", error)


def test_price_paid_in_base_units_instead_of_tokens(
    coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]
) -> None:
    """The asset's price "10" is 10 tokens: an agreement paying 10 base units is refused."""
    order["agreement"] = consumer.agreement(coordinator_gw, "coordinator", amount=10)
    error = _execute_error(consumer.client(coordinator_gw), order)
    expected = f"pays [10] to ['{coordinator_gw.address}']; expected [{consumer.keeper.token.base(10)}]"
    _refused(coordinator_gw, order, 403, expected, error)


def test_lock_not_fulfilled(coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]) -> None:
    order["agreement"] = consumer.agreement(coordinator_gw, "coordinator", lock=False)
    error = _execute_error(consumer.client(coordinator_gw), order)
    _refused(coordinator_gw, order, 409, "is not locked (lock condition unfulfilled)", error)


def test_time_out_shorter_than_the_session(
    coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]
) -> None:
    """The consumer could refund before an honest session (600 s here) ends: refused before any launch."""
    order["agreement"] = consumer.agreement(coordinator_gw, "coordinator", time_out=100)
    error = _execute_error(consumer.client(coordinator_gw), order)
    _refused(coordinator_gw, order, 409, "blocks, before the session could end (610 blocks needed)", error)


def test_workflow_ddo_checksum_mismatch(
    coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]
) -> None:
    doc = consumer.get_ddo(order["workflow_did"])
    doc["service"][0]["attributes"]["main"]["parameters"]["rounds"] = 99  # after registration
    consumer.put_ddo(doc)
    error = _execute_error(consumer.client(coordinator_gw), order)
    _refused(coordinator_gw, order, 409, "workflow DDO checksum mismatch", error)


def test_unknown_agreement(
    coordinator_gw: Gateway, consumer: Consumer, gw_chain: dict[str, Any], order: dict[str, Any]
) -> None:
    w3 = connect(gw_chain["rpc_url"])
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    order["agreement"] = consumer.agreement(coordinator_gw, "coordinator")
    assert w3.provider.make_request("evm_revert", [snapshot])["result"]  # its terms stay valid, it is gone
    error = _execute_error(consumer.client(coordinator_gw), order)
    _refused(coordinator_gw, order, 404, "does not exist on this chain", error)


def test_path_and_body_agreement_differ(
    coordinator_gw: Gateway, consumer: Consumer, order: dict[str, Any]
) -> None:
    other = "0x" + "ab" * 32
    path, body = f"{API}/compute/execute/{other}", json.dumps(order).encode()
    headers = auth.signed_headers(
        consumer.keeper.sign_message, consumer.address, "POST", path, consumer.audience(coordinator_gw), body
    )
    answer = consumer.raw(coordinator_gw, "POST", path, body, headers)
    _refused(coordinator_gw, order, 400, "differs from the body's agreement.agreement_id", answer)
    assert coordinator_gw.nothing_launched(other)


def test_participant_before_the_coordinator_is_published(
    data_gw: Gateway,
    coordinator_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    order: dict[str, Any],
) -> None:
    model = data.softmax_model(manifest)
    session_id = consumer.get_ddo(order["workflow_did"])["service"][0]["attributes"]["main"]["parameters"][
        "sessionId"
    ]
    participant = {
        "agreement": consumer.agreement(data_gw, "provider-1"),
        "workflow_did": consumer.participant_workflow(
            data_gw, "provider-1", session_id, order["workflow_did"], model
        ),
    }
    error = _execute_error(consumer.client(data_gw), participant)
    _refused(data_gw, participant, 409, "coordinator not announced yet", error)


@pytest.mark.parametrize(
    ("forgery", "detail"),
    [
        ("consumer-signed", "announcement refused: signed by"),
        ("other-session", "announcement refused: for session 'another-session'"),
        ("tampered-url", "announcement refused: signed by"),
    ],
)
def test_participant_refuses_a_coordinator_its_provider_did_not_announce(
    data_gw: Gateway,
    coordinator_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    order: dict[str, Any],
    forgery: str,
    detail: str,
) -> None:
    """Whoever writes the coordinator DDO's annotations (the consumer, or anyone with its storage) cannot
    point participants at another coordinator: the announcement must be the coordinator provider's."""
    coordinator_did = order["workflow_did"]
    session_id = consumer.get_ddo(coordinator_did)["service"][0]["attributes"]["main"]["parameters"][
        "sessionId"
    ]
    cert = key_pair(session_id, 600).cert_pem
    provider_key = chain.account(chain.COORDINATOR_PROVIDER).key.to_0x_hex()
    consumer_key = chain.account(chain.CONSUMER).key.to_0x_hex()
    paid = consumer.agreement(coordinator_gw, "coordinator")  # a real, locked coordinator agreement
    forged = {
        "consumer-signed": announce.sign(consumer_key, session_id, "127.0.0.1:1", cert, paid),
        "other-session": announce.sign(provider_key, "another-session", "127.0.0.1:1", cert, paid),
        "tampered-url": {
            **announce.sign(provider_key, session_id, "127.0.0.1:1", cert, paid),
            "url": "10.0.0.1:1",
        },
    }[forgery]
    consumer.annotate(coordinator_did, coordinatorUrl="127.0.0.1:1", coordinatorAnnouncement=forged)
    participant = {
        "agreement": consumer.agreement(data_gw, "provider-1"),
        "workflow_did": consumer.participant_workflow(
            data_gw, "provider-1", session_id, coordinator_did, data.softmax_model(manifest)
        ),
    }
    error = _execute_error(consumer.client(data_gw), participant)
    _refused(data_gw, participant, 409, detail, error)
