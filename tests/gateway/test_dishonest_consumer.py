"""A dishonest consumer against real gateways (separate processes, real chain, real SeaweedFS): it writes its
own DDOs and agreements, and each attack ends refused with nothing launched, or isolated."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from gatewaystack import Consumer, Gateway, start_gateway, stop_gateway, wait_for

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.contracts.client import connect
from airflow_nevermined_fl.contracts.deployment import load_deployment
from airflow_nevermined_fl.contracts.keeper import HOOK_CONTRACTS, Keeper, KeeperSettings
from airflow_nevermined_fl.contracts.timeouts import blocks_needed, compute_time_out
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.gateway.channel import key_pair
from airflow_nevermined_fl.protocol import announce
from airflow_nevermined_fl.protocol.client import GatewayError
from airflow_nevermined_fl.resolver import ResolveError, resolve_provider
from airflow_nevermined_fl.runtime import arrays
from airflow_nevermined_fl.runtime.channel import certificate_fingerprint
from airflow_nevermined_fl.runtime.softmax import SoftmaxRegression

SESSION_TIMEOUT = 60


class Served:
    """Documents served over HTTP on loopback, and every path anyone asked for."""

    def __init__(self) -> None:
        self.docs: dict[str, bytes] = {}
        self.requested: list[str] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                served.requested.append(self.path)
                body = served.docs.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def register(self, consumer: Consumer, main: dict[str, Any], provider: str) -> str:
        """A DID of the consumer whose DDO (for ``main``) is served here."""
        seed = "0x" + secrets.token_hex(32)
        did = consumer.keeper.did_for(seed, consumer.address)
        path = f"/{did[7:]}.json"
        self.docs[path] = json.dumps(ddo.build(did, consumer.address, main)).encode()
        consumer.keeper.register_did(seed, ddo.checksum(main), [provider], self.url + path)
        return did


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _refused(gateway: Gateway, consumer: Consumer, order: dict[str, Any], status: int, detail: str) -> None:
    """``execute`` of ``order`` at ``gateway`` refused with ``status`` and ``detail``; nothing launched."""
    with pytest.raises(GatewayError) as err:
        consumer.client(gateway).execute(order["agreement"], order["workflow_did"])
    assert (err.value.status_code, detail in err.value.detail) == (status, True), err.value.detail
    assert gateway.nothing_launched(order["agreement"]["agreement_id"])


def _coordinator_order(
    consumer: Consumer,
    gateway: Gateway,
    seats: list[str],
    model: dict[str, Any],
    session_id: str,
    **terms: Any,
) -> dict[str, Any]:
    workflow = consumer.coordinator_workflow(
        gateway, session_id, model, seats, session_timeout=SESSION_TIMEOUT, **terms.pop("conf", {})
    )
    return {"agreement": consumer.agreement(gateway, "coordinator", **terms), "workflow_did": workflow}


def _object_url(grant: str | dict[str, Any]) -> str:
    """The object a grant names: a presigned URL without its query, or a presigned POST's URL and key."""
    if isinstance(grant, str):
        return grant.split("?")[0]
    return f"{grant['url'].rstrip('/')}/{grant['fields']['key']}"


# -- verify before work ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flaw", ["unlocked", "foreign"])
def test_nothing_fetched_before_the_agreement_holds(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    served: Served,
    manifest: dict[str, Any],
    session_id: str,
    flaw: str,
) -> None:
    """A workflow DID whose DDO is at a URL the attacker serves: for an agreement that is not locked, or
    not this gateway's, the gateway never requests it."""
    settings = {"rounds": 1, "epochs": 1, "min_participants": 1, "fraction": 1.0, "heartbeat": 0.5}
    settings |= {"model": data.softmax_model(manifest), "stall_timeout": 60, "session_timeout": 600}
    main = ddo.coordinator_main(
        {**settings, "initial_model": None},
        session_id,
        consumer.address,
        coordinator_gw.address,
        [data_gw.asset("provider-1")["did"]],
    )
    workflow = served.register(consumer, main, coordinator_gw.address)
    agreement = {
        "unlocked": lambda: consumer.agreement(coordinator_gw, "coordinator", lock=False),
        "foreign": lambda: consumer.agreement(data_gw, "provider-1"),
    }[flaw]()
    order = {"agreement": agreement, "workflow_did": workflow}
    status, detail = {"unlocked": (409, "is not locked"), "foreign": (403, "another provider's asset")}[flaw]
    before = len(served.requested)
    _refused(coordinator_gw, consumer, order, status, detail)
    assert served.requested[before:] == []


# -- fair payment ----------------------------------------------------------------------------------------


def test_late_execute_refused(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    gw_chain: dict[str, Any],
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """Lock with a time-out long enough, wait until little of it is left, then execute: the consumer could
    refund while the session runs. Refused on the time LEFT, not the time-out's length."""
    time_out = compute_time_out(SESSION_TIMEOUT, gw_chain["block_time"])
    seats = [data_gw.asset("provider-1")["did"]]
    order = _coordinator_order(
        consumer, coordinator_gw, seats, data.softmax_model(manifest), session_id, time_out=time_out
    )
    created = consumer.keeper.refund_block(order["agreement"]) - time_out
    needed = blocks_needed(SESSION_TIMEOUT, gw_chain["block_time"])
    w3 = connect(gw_chain["rpc_url"])
    to_mine = created + time_out - needed + 1 - w3.eth.block_number
    w3.provider.make_request("anvil_mine", [hex(max(to_mine, 1))])
    _refused(coordinator_gw, consumer, order, 409, f"before the session could end ({needed} blocks needed)")


@pytest.mark.parametrize(
    ("terms", "detail"),
    [
        ({"time_out": 0}, "compute time-out 0: never refundable"),
        ({"time_lock": 10**9}, "escrow time lock 1000000000 blocks, longer than the compute time-out"),
    ],
)
def test_unfair_time_terms_refused(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
    terms: dict[str, int],
    detail: str,
) -> None:
    """A compute time-out of 0 strands the consumer's tokens if the provider fails; an escrow time lock of
    a billion blocks holds the provider's payment forever."""
    seats = [data_gw.asset("provider-1")["did"]]
    workflow = consumer.coordinator_workflow(
        coordinator_gw, session_id, data.softmax_model(manifest), seats, session_timeout=SESSION_TIMEOUT
    )
    asset = coordinator_gw.asset("coordinator")
    agreement = consumer.keeper.create_compute_agreement(
        "0x" + secrets.token_hex(32),
        asset["did"],
        coordinator_gw.address,
        consumer.keeper.token.base(asset["price"]),
        **{"time_out": 1000, **terms},
    )
    consumer.keeper.lock_payment(agreement)
    order = {"agreement": agreement.to_dict(), "workflow_did": workflow}
    _refused(coordinator_gw, consumer, order, 409, detail)


# -- a legitimate coordinator only -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["no-agreement", "own-asset"])
def test_consumer_as_its_own_coordinator_refused(
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
    variant: str,
) -> None:
    """The consumer names itself as the coordinator's provider and signs its own announcement (with no
    agreement, or with a paid agreement on an fl-coordinator asset it registered itself): it would receive
    every provider's update and choose the weights sent back. No participant is launched."""
    model, keeper = data.softmax_model(manifest), consumer.keeper
    settings = {"rounds": 1, "epochs": 1, "min_participants": 1, "fraction": 1.0, "heartbeat": 0.5}
    settings |= {"model": model, "stall_timeout": 60, "session_timeout": 600, "initial_model": None}
    seats = [data_gw.asset("provider-1")["did"]]
    main = ddo.coordinator_main(settings, session_id, consumer.address, consumer.address, seats)
    coordinator_did = consumer.publish_workflow(main, consumer.address)
    own_asset = ddo.asset_main(
        "fl-coordinator", "rogue", consumer.address, "http://127.0.0.1:1", "1", keeper.token_address
    )
    asset_did = consumer.publish_workflow(own_asset, consumer.address)
    paid = keeper.create_compute_agreement(
        "0x" + secrets.token_hex(32), asset_did, consumer.address, 1, time_out=1000
    )
    keeper.lock_payment(paid)
    consumer_key = chain.account(chain.CONSUMER).key.to_0x_hex()
    cert = key_pair(session_id, 600).cert_pem
    if variant == "own-asset":
        announced = announce.sign(consumer_key, session_id, "127.0.0.1:1", cert, paid.to_dict())
    else:  # what a participant's gateway accepted before announcements named an agreement
        text = f"nvfl-coordinator/1\nsession: {session_id}\ngrpc: 127.0.0.1:1\n"
        text += f"certificate-sha256: {certificate_fingerprint(cert)}"
        signature = Account.sign_message(encode_defunct(text=text), consumer_key).signature.hex()
        announced = {"session_id": session_id, "url": "127.0.0.1:1", "tls_cert": cert, "signature": signature}
    consumer.annotate(coordinator_did, coordinatorUrl="127.0.0.1:1", coordinatorAnnouncement=announced)
    order = {
        "agreement": consumer.agreement(data_gw, "provider-1"),
        "workflow_did": consumer.participant_workflow(
            data_gw, "provider-1", session_id, coordinator_did, model
        ),
    }
    detail = {"no-agreement": "names no agreement", "own-asset": f"the consumer {consumer.address} owns"}
    _refused(data_gw, consumer, order, 409, f"coordinator announcement refused: {detail[variant]}")


ACCOMPLICE, LISTING_PROVIDER = 8, 9
"""Anvil dev accounts no other test uses: the consumer's accomplice, a data provider listing coordinators."""


@pytest.fixture
def listing_gw(
    tmp_path: Path, gw_chain: dict[str, Any], seaweed: dict[str, Any], manifest: dict[str, Any]
) -> Iterator[Gateway]:
    """A data provider that works with the devstack's coordinator provider only (``policy.coordinators``)."""
    policy = {"coordinators": [chain.account(chain.COORDINATOR_PROVIDER).address]}
    dataset = manifest["providers"][0]["path"]
    services = [
        {"name": "lister", "type": "fl-participant", "price": "5", "dataset": dataset, "policy": policy}
    ]
    gateway = start_gateway(tmp_path, "lister", LISTING_PROVIDER, gw_chain, seaweed, services)
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


def test_an_accomplice_coordinator_passes_the_chain_but_not_the_providers_list(
    gw_chain: dict[str, Any],
    data_gw: Gateway,
    listing_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """The consumer's accomplice (a second address) publishes its own fl-coordinator asset, takes the
    consumer's locked agreement on it and signs the announcement: every on-chain check holds, so a data
    provider with no list joins it (the control); one whose policy lists its coordinator providers refuses."""
    accomplice = chain.account(ACCOMPLICE)
    keeper = Keeper(
        KeeperSettings(
            rpc_url=gw_chain["rpc_url"],
            private_key=accomplice.key.to_0x_hex(),
            deployment=load_deployment(gw_chain["deployment_file"], HOOK_CONTRACTS),
            where="accomplice",
        )
    )
    asset = ddo.asset_main(
        "fl-coordinator", "accomplice", accomplice.address, "http://127.0.0.1:1", "1", keeper.token_address
    )
    seed = "0x" + secrets.token_hex(32)
    asset_did = keeper.did_for(seed, accomplice.address)
    consumer.put_ddo(ddo.build(asset_did, accomplice.address, asset))
    keeper.register_did(
        seed,
        ddo.checksum(asset),
        [accomplice.address],
        f"s3://{consumer.bucket}/{consumer.ddo_key(asset_did)}",
    )
    paid = consumer.keeper.create_compute_agreement(
        "0x" + secrets.token_hex(32), asset_did, accomplice.address, 1, time_out=1000
    )
    consumer.keeper.lock_payment(paid)
    model = data.softmax_model(manifest)
    settings = {"rounds": 1, "epochs": 1, "min_participants": 1, "fraction": 1.0, "heartbeat": 0.5}
    settings |= {"model": model, "stall_timeout": 60, "session_timeout": 600, "initial_model": None}
    cert = key_pair(session_id, 600).cert_pem
    announced = announce.sign(accomplice.key.to_0x_hex(), session_id, "127.0.0.1:1", cert, paid.to_dict())

    def order(gateway: Gateway, service: str) -> dict[str, Any]:
        seats = [gateway.asset(service)["did"]]
        main = ddo.coordinator_main(settings, session_id, consumer.address, accomplice.address, seats)
        coordinator_did = consumer.publish_workflow(main, accomplice.address)
        consumer.annotate(coordinator_did, coordinatorUrl="127.0.0.1:1", coordinatorAnnouncement=announced)
        return {
            "agreement": consumer.agreement(gateway, service),
            "workflow_did": consumer.participant_workflow(
                gateway, service, session_id, coordinator_did, model
            ),
        }

    control = order(data_gw, "provider-1")
    client = consumer.client(data_gw)
    assert client.execute(control["agreement"], control["workflow_did"])["state"] == "running"
    client.stop(control["agreement"]["agreement_id"])
    _refused(
        listing_gw, consumer, order(listing_gw, "lister"), 409, "policy.coordinators: " + accomplice.address
    )


# -- isolation -------------------------------------------------------------------------------------------


def test_session_id_collision_isolated(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """Two sessions with the same consumer-chosen sessionId: their storage prefixes come from their
    agreements, so the second one's grants can neither overwrite nor read the first one's objects."""
    seats = [data_gw.asset("provider-1")["did"]]
    model = data.softmax_model(manifest)
    orders = [_coordinator_order(consumer, coordinator_gw, seats, model, session_id) for _ in range(2)]
    client = consumer.client(coordinator_gw)
    grants = []
    try:
        for order in orders:
            client.execute(order["agreement"], order["workflow_did"])
            [workload] = coordinator_gw.workload_dirs(order["agreement"]["agreement_id"])
            grants.append(json.loads((workload / "grants.json").read_text())["objects"])
        first, second = (
            {_object_url(grant) for g in objects.values() for grant in g.values()} for objects in grants
        )
        assert not first & second
        assert all(f"/sessions/{orders[0]['agreement']['agreement_id']}/" in url for url in first)
        attack = b"written by the other session"
        assert httpx.put(grants[1]["global.npy"]["put"], content=attack).status_code == 200
        assert httpx.get(grants[0]["global.npy"]["get"]).content != attack
    finally:
        for order in orders:
            if coordinator_gw.recorded(order["agreement"]["agreement_id"]):
                client.stop(order["agreement"]["agreement_id"])


def test_upload_grant_bounded_to_the_model(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """A participant (or whoever holds its upload grant) uploads 100 times the model's size to fill the
    coordinator provider's bucket: the storage refuses it; an upload of the model's size is accepted. The
    grant expires with the session (its time-out plus 10 minutes)."""
    model = data.softmax_model(manifest)
    order = _coordinator_order(
        consumer, coordinator_gw, [data_gw.asset("provider-1")["did"]], model, session_id
    )
    client = consumer.client(coordinator_gw)
    client.execute(order["agreement"], order["workflow_did"])
    try:
        [workload] = coordinator_gw.workload_dirs(order["agreement"]["agreement_id"])
        objects = json.loads((workload / "grants.json").read_text())["objects"]
        [form] = [grant["post"] for name, grant in objects.items() if name.startswith("uploads/")]
        policy = json.loads(base64.b64decode(form["fields"]["policy"]))
        expires = datetime.datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
        left = expires - datetime.datetime.now(datetime.UTC)
        assert datetime.timedelta(0) < left <= datetime.timedelta(seconds=SESSION_TIMEOUT + 600)
        honest = arrays.encode(SoftmaxRegression(model["num_features"], model["num_classes"]).init_weights())

        def post(body: bytes) -> httpx.Response:
            return httpx.post(form["url"], data=form["fields"], files={"file": ("upload.npy", body)})

        flood = post(honest * 100)
        assert (flood.status_code, "EntityTooLarge" in flood.text) == (400, True), flood.text
        assert post(honest).status_code == 204
    finally:
        client.stop(order["agreement"]["agreement_id"])


@pytest.mark.parametrize(
    ("initial", "status", "detail"),
    [
        ("s3://{bucket}/datasets/anything.npz", 409, "initialModel: expected a model DID"),
        ("{provider_asset}", 403, "is registered by"),
    ],
)
def test_foreign_warm_start_refused(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
    initial: str,
    status: int,
    detail: str,
) -> None:
    """A warm start from a raw URL (which the coordinator's gateway would presign with its own storage
    keys), or from a DID the consumer did not register: refused before any launch."""
    initial = initial.format(bucket=consumer.bucket, provider_asset=data_gw.asset("provider-1-s3")["did"])
    seats = [data_gw.asset("provider-1")["did"]]
    order = _coordinator_order(
        consumer,
        coordinator_gw,
        seats,
        data.softmax_model(manifest),
        session_id,
        conf={"initial_model": initial},
    )
    _refused(coordinator_gw, consumer, order, status, detail)


def test_seat_from_a_consumer_asset_refused(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """The consumer registers its own ``fl-participant`` asset naming a real provider with inflated rows
    (its FedAvg weight): the coordinator's gateway seats a provider only from an asset that provider
    registered, and launches nothing."""
    inflated = ddo.asset_main(
        "fl-participant",
        "provider-1",
        data_gw.address,
        "http://127.0.0.1:1",
        "1",
        consumer.keeper.token_address,
        {"features": 64, "classes": 10, "rows": 10**9},
    )
    forged = consumer.publish_workflow(inflated, data_gw.address)
    model = data.softmax_model(manifest)
    order = _coordinator_order(consumer, coordinator_gw, [forged], model, session_id)
    detail = f"participant {forged} names provider {data_gw.address.lower()} but is registered by"
    _refused(coordinator_gw, consumer, order, 409, detail)


# -- the resolver ----------------------------------------------------------------------------------------


def test_resolver_refuses_a_price_in_another_token(
    coordinator_gw: Gateway, consumer: Consumer, served: Served
) -> None:
    """A provider DDO pricing in another token than the deployment's: the consumer would lock NVM for a
    price stated in something else."""
    other_token = "0x" + "11" * 20
    main = ddo.asset_main(
        "fl-coordinator", "other-token", consumer.address, "http://127.0.0.1:1", "1", other_token
    )
    did = served.register(consumer, main, consumer.address)
    with pytest.raises(ResolveError, match="its DDO's price is in token 0x1111"):
        resolve_provider(consumer.keeper, did)
    fair = ddo.asset_main(
        "fl-coordinator", "nvm", consumer.address, "http://127.0.0.1:1", "1", consumer.keeper.token_address
    )
    assert resolve_provider(consumer.keeper, served.register(consumer, fair, consumer.address)).price == "1"


# -- stop after the work is in ---------------------------------------------------------------------------


def _announced(
    consumer: Consumer,
    coordinator_gw: Gateway,
    data_gw: Gateway,
    session_id: str,
    model: dict[str, Any],
    rounds: int,
) -> tuple[dict[str, Any], str]:
    """A session's coordinator, executed and announced: its agreement, and provider-1's workflow DID."""
    seats = [data_gw.asset("provider-1")["did"]]
    conf = {"rounds": rounds, "session_timeout": SESSION_TIMEOUT}
    coordinator_did = consumer.coordinator_workflow(coordinator_gw, session_id, model, seats, **conf)
    coordinator, client = consumer.agreement(coordinator_gw, "coordinator"), consumer.client(coordinator_gw)
    client.execute(coordinator, coordinator_did)
    up = wait_for(
        lambda: (s := client.status(coordinator["agreement_id"]))["announcement"] and s, 60, "coordinator up"
    )
    consumer.annotate(coordinator_did, coordinatorAnnouncement=up["announcement"])
    return coordinator, consumer.participant_workflow(
        data_gw, "provider-1", session_id, coordinator_did, model
    )


def test_stop_after_the_last_upload_is_paid_before_any_work_refundable(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    gw_chain: dict[str, Any],
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """The consumer stops a participant once its upload of the session's last round is in (to refund it
    later while keeping the model; the participant held between that upload and its exit by SIGSTOP): its
    gateway settles it all the same. A participant stopped before it did any work stays unsettled and is
    refunded once its time-out passed. The balances reconcile."""
    keeper, model = consumer.keeper, data.softmax_model(manifest)
    price = {"coordinator": keeper.token.base(10), "provider-1": keeper.token.base(5)}
    parties = (consumer.address, data_gw.address, coordinator_gw.address)
    before = {who: keeper.token_balance(who) for who in parties}
    coordinator_client, participant_client = consumer.client(coordinator_gw), consumer.client(data_gw)
    # Before any work: stopped at once, in a long session whose coordinator is then stopped too (unpaid).
    long_session, workflow = _announced(consumer, coordinator_gw, data_gw, session_id, model, rounds=500)
    refundable_after = blocks_needed(SESSION_TIMEOUT, gw_chain["block_time"]) + 5
    idle = consumer.agreement(data_gw, "provider-1", time_out=refundable_after)
    participant_client.execute(idle, workflow)
    assert participant_client.stop(idle["agreement_id"])["state"] == "stopped"
    coordinator_client.stop(long_session["agreement_id"])
    # After the last round's upload: a two-round session.
    coordinator, workflow = _announced(consumer, coordinator_gw, data_gw, session_id + "-2", model, rounds=2)
    worked = consumer.agreement(data_gw, "provider-1")
    participant_client.execute(worked, workflow)
    directory = data_gw.workload_dirs(worked["agreement_id"])[0]
    log = directory / "output.log"
    pid = json.loads((directory / "workload.json").read_text())["details"]["pid"]
    last = "NVFL_UPLOAD_ACCEPTED 1"  # rounds 0..1
    wait_for(lambda: last in log.read_text().splitlines(), 90, "the last round's acknowledged upload")
    with contextlib.suppress(ProcessLookupError):  # held before it learns that the session finished
        os.killpg(pid, signal.SIGSTOP)
    assert participant_client.stop(worked["agreement_id"])["state"] == "finished"
    for client, agreement in ((participant_client, worked), (coordinator_client, coordinator)):
        wait_for(
            lambda c=client, a=agreement: c.status(a["agreement_id"])["settlement"]["settled"],
            60,
            "settlement",
        )
    connect(gw_chain["rpc_url"]).provider.make_request("anvil_mine", [hex(refundable_after + 1)])
    assert not participant_client.status(idle["agreement_id"])["settlement"]["settled"]
    assert keeper.refund(idle)
    assert keeper.condition_states(worked) == {
        "compute": "fulfilled",
        "lock": "fulfilled",
        "escrow": "fulfilled",
    }
    assert keeper.condition_states(idle)["compute"] == "aborted"
    assert keeper.token_balance(data_gw.address) == before[data_gw.address] + price["provider-1"]
    assert (
        keeper.token_balance(coordinator_gw.address) == before[coordinator_gw.address] + price["coordinator"]
    )
    # The long session's coordinator (stopped, unpaid) stays locked until the consumer refunds it.
    spent = 2 * price["coordinator"] + price["provider-1"]
    assert keeper.token_balance(consumer.address) == before[consumer.address] - spent
