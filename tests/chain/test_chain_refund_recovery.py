"""A consumer's agreements read back from the chain alone, and ``nvfl refund``, on the real contracts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3.exceptions import Web3RPCError

from airflow_nevermined_fl import process
from airflow_nevermined_fl.contracts.client import Signer
from airflow_nevermined_fl.contracts.deployment import load_deployment, mint
from airflow_nevermined_fl.contracts.keeper import (
    ComputeAgreement,
    Keeper,
    KeeperSettings,
    consumer_agreements,
    refund_due_agreements,
)
from airflow_nevermined_fl.contracts.recovery import _logs, block_ranges
from airflow_nevermined_fl.contracts.values import did_bytes, keccak_abi
from airflow_nevermined_fl.devtools import cli
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

TOKEN = 10**18
EXPECTED = {
    "released": "released",
    "refunded": "refunded",
    "due": "refund_due",
    "computed": "computed",
    "not_locked": "not_locked",
    "waiting": "waiting",
    "forever": "waiting",
}


@dataclass
class Scenario:
    keeper: Keeper
    key: str
    uri: str
    provider: NeverminedHook
    agreements: dict[str, ComputeAgreement]

    @property
    def address(self) -> str:
        return self.keeper.address

    def ids(self) -> dict[str, str]:
        return {name: a.agreement_id for name, a in self.agreements.items()}


def connection_uri(devchain: dict[str, Any], key: str, **extra: Any) -> str:
    from airflow.sdk import Connection

    extra = {"deployment_file": devchain["deployment_file"], "chain_id": devchain["chain_id"], **extra}
    return Connection(
        conn_id="consumer",
        conn_type="nevermined",
        host=extra.pop("rpc_url", devchain["rpc_url"]),
        password=key,
        extra=json.dumps(extra),
    ).get_uri()


def fresh_consumer(devchain: dict[str, Any], w3: Any, tokens: int) -> tuple[Keeper, str]:
    """A new account (its own agreements only), with ETH for gas and ``tokens`` NVM."""
    account = Account.create()
    key = account.key.to_0x_hex()
    w3.provider.make_request("anvil_setBalance", [account.address, hex(10 * 10**18)])
    deployment = load_deployment(devchain["deployment_file"])
    mint(Signer(w3, chain.account(chain.OWNER)), deployment, account.address, tokens)
    return Keeper(KeeperSettings(devchain["rpc_url"], key, deployment, where="test consumer")), key


@pytest.fixture
def scenario(devchain: dict[str, Any], w3: Any, tools: Any) -> Scenario:
    """One consumer's agreements in every state: released by its provider, refunded already, refund due
    (two receivers), computed but not released, never locked, waiting, waiting forever (time_out 0); and
    one agreement another account created naming this consumer."""
    keeper, key = fresh_consumer(devchain, w3, 100 * TOKEN)
    provider = NeverminedHook("nevermined_provider_1")
    coordinator = chain.accounts()["coordinator_provider"]
    session = uuid.uuid4().hex
    asset = provider.register_did(
        provider.did_seed(session, "data"), "0x" + "ab" * 32, [provider.address], "http://127.0.0.1/ddo"
    )

    def create(name: str, amount: Any, time_out: int, receivers: list[str] | None = None) -> ComputeAgreement:
        seed = keeper.agreement_seed(f"{session}/{name}", provider.address)
        return keeper.create_compute_agreement(
            seed, asset.did, provider.address, amount, receivers=receivers, time_out=time_out
        )

    made: dict[str, ComputeAgreement] = {}
    made["released"] = create("released", TOKEN, 1000)
    keeper.lock_payment(made["released"])
    provider.fulfill_compute(made["released"])
    provider.release_escrow(made["released"])
    made["refunded"] = create("refunded", 2 * TOKEN, 2)
    keeper.lock_payment(made["refunded"])
    tools.mine(3)
    keeper.refund(made["refunded"])
    made["due"] = create("due", [2 * TOKEN, TOKEN], 4, receivers=[provider.address, coordinator])
    keeper.lock_payment(made["due"])
    made["computed"] = create("computed", 4 * TOKEN, 1000)
    keeper.lock_payment(made["computed"])
    provider.fulfill_compute(made["computed"])
    made["not_locked"] = create("not_locked", 5 * TOKEN, 3)
    made["waiting"] = create("waiting", 6 * TOKEN, 10_000)
    keeper.lock_payment(made["waiting"])
    made["forever"] = create("forever", 7 * TOKEN, 0)
    keeper.lock_payment(made["forever"])
    # Anyone may create an agreement naming this consumer: it is not the consumer's.
    NeverminedHook("nevermined_provider_2")._tx(
        "EscrowComputeExecutionTemplate",
        "createAgreement",
        os.urandom(32),
        did_bytes(asset.did),
        [os.urandom(32) for _ in range(3)],
        [0, 0, 0],
        [0, 0, 0],
        keeper.address,
    )
    tools.mine(5)  # past the due agreement's time-out
    return Scenario(keeper, key, connection_uri(devchain, key), provider, made)


def no_key(scenario: Scenario, *texts: str) -> None:
    for text in texts:
        assert scenario.key not in text and scenario.key.removeprefix("0x") not in text


def timeless(agreements: list[Any]) -> list[dict[str, Any]]:
    """Listings without their read block: the dev chain also mines a block every second."""
    return [{**a.to_dict(), "current_block": None} for a in agreements]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["refund", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_listing_rebuilds_each_agreement_and_its_state_from_the_chain(scenario: Scenario, w3: Any) -> None:
    keeper, provider = scenario.keeper, scenario.provider
    before = w3.eth.block_number
    listed = consumer_agreements(keeper)
    block = w3.eth.block_number
    ids = scenario.ids()
    assert [a.agreement_id for a in listed] == list(ids.values())  # oldest first, the foreign one left out
    by_name = {name: next(a for a in listed if a.agreement_id == i) for name, i in ids.items()}
    assert {name: a.status for name, a in by_name.items()} == EXPECTED
    for name, a in by_name.items():
        original = scenario.agreements[name]
        assert (a.did, a.consumer, a.provider) == (original.did, keeper.address, provider.address)
        assert before <= a.current_block <= block
        assert a.condition_states == keeper.condition_states(original), name
        if name == "not_locked":
            assert (a.amount, a.amounts, a.receivers, a.token, a.agreement) == (None,) * 5
            continue
        # The same terms (and ids) the lock used, tx hash of the creation included.
        assert a.agreement == original, name
        expected = (str(original.total // TOKEN), original.amounts, keeper.token_address)  # whole tokens
        assert (a.amount, a.amounts, a.token) == expected
    due, waiting = by_name["due"], by_name["waiting"]
    assert due.amount == "3" and due.receivers == scenario.agreements["due"].receivers
    assert due.condition_states == {"compute": "unfulfilled", "lock": "fulfilled", "escrow": "unfulfilled"}
    assert due.due_after_block == due.created_block + 4 < due.current_block
    assert waiting.due_after_block == waiting.created_block + 10_000 > block
    assert by_name["forever"].due_after_block is None and by_name["forever"].time_out == 0
    assert by_name["refunded"].condition_states["compute"] == "aborted"

    # Log queries in small block ranges, from a later block, by another account: same answers.
    assert timeless(consumer_agreements(keeper, block_chunk=3)) == timeless(listed)
    first = by_name["computed"].created_block
    assert [a.agreement_id for a in consumer_agreements(keeper, from_block=first)] == [
        ids[n] for n in ("computed", "not_locked", "waiting", "forever")
    ]
    assert consumer_agreements(keeper, from_block=block + 1) == []
    assert timeless(consumer_agreements(provider, keeper.address)) == timeless(listed)


def test_refund_command_refunds_exactly_the_due_one_then_nothing(
    scenario: Scenario, tools: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    keeper, ids = scenario.keeper, scenario.ids()
    escrow = scenario.agreements["due"].escrow
    nonce = tools.nonce(keeper.address)
    balances = [keeper.token_balance(a) for a in (keeper.address, escrow)]

    code, out, err = run_cli(capsys, "--conn-uri", scenario.uri, "--dry-run", "--json")
    report = json.loads(out)
    assert code == 1  # a refund remains due
    assert report["dry_run"] and report["due"] == [ids["due"]] and report["refunded"] == []
    assert report["symbol"] == "NVM" and report["agreements"][0]["amount"] == "1"
    assert report["counts"] == {"released": 1, "refunded": 1, "refund_due": 1, "computed": 1} | {
        "not_locked": 1,
        "waiting": 2,
    }
    assert tools.nonce(keeper.address) == nonce
    assert [keeper.token_balance(a) for a in (keeper.address, escrow)] == balances
    no_key(scenario, out, err)

    code, out, err = run_cli(capsys, "--conn-uri", scenario.uri)
    assert code == 0, err
    assert f"refunded {ids['due']}: 3 NVM back to the consumer" in out
    assert "nothing left to refund" in out
    for name in ("waiting", "forever", "computed", "not_locked"):
        assert ids[name] in out
    assert ids["released"] not in out
    assert tools.nonce(keeper.address) == nonce + 2  # abortByTimeOut + escrow fulfill
    assert [keeper.token_balance(a) for a in (keeper.address, escrow)] == [
        balances[0] + 3 * TOKEN,
        balances[1] - 3 * TOKEN,
    ]
    assert keeper.condition_states(scenario.agreements["due"]) == {
        "compute": "aborted",
        "lock": "fulfilled",
        "escrow": "fulfilled",
    }
    no_key(scenario, out, err)

    # A second run: nothing to refund, nothing sent.
    code, out, err = run_cli(capsys, "--conn-uri", scenario.uri)
    assert code == 0 and "nothing to refund: no agreement is due" in out
    code, out, err = run_cli(capsys, "--conn-uri", scenario.uri, "--json")
    report = json.loads(out)
    assert code == 0 and report["refunded"] == [] and report["due"] == []
    statuses = {a["agreement_id"]: a["status"] for a in report["agreements"]}
    assert statuses == {i: EXPECTED[n] for n, i in ids.items()} | {ids["due"]: "refunded"}
    assert tools.nonce(keeper.address) == nonce + 2
    assert keeper.token_balance(keeper.address) == balances[0] + 3 * TOKEN


def test_refund_due_agreements_api_reports_refunds_and_is_idempotent(scenario: Scenario, tools: Any) -> None:
    keeper, ids = scenario.keeper, scenario.ids()
    nonce = tools.nonce(keeper.address)
    dry = refund_due_agreements(keeper, dry_run=True)
    assert [a.agreement_id for a in dry.due] == [ids["due"]] and tools.nonce(keeper.address) == nonce
    report = refund_due_agreements(keeper)
    assert [(r["agreement_id"], r["amount"]) for r in report.refunded] == [(ids["due"], "3")]
    assert report.refunded[0]["tx_hash"] and report.failed == [] and report.due == []
    refunded = next(a for a in report.agreements if a.agreement_id == ids["due"])
    assert refunded.status == "refunded" and refunded.current_block > report.current_block
    again = refund_due_agreements(keeper)
    assert again.refunded == [] and again.due == [] and tools.nonce(keeper.address) == nonce + 2
    json.dumps(again.to_dict())  # JSON-serializable as is


def test_refund_through_the_nvfl_entry_point_never_prints_the_key(scenario: Scenario) -> None:
    nvfl = Path(sys.executable).with_name("nvfl")
    assert nvfl.is_file()
    result = subprocess.run(
        [str(nvfl), "refund", "--conn-uri", scenario.uri, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)  # progress logs go to stderr: stdout is the report alone
    assert [r["agreement_id"] for r in report["refunded"]] == [scenario.ids()["due"]]
    assert "abortByTimeOut mined in block" in result.stderr
    no_key(scenario, result.stdout, result.stderr)


def test_refund_reads_the_connection_from_airflow_or_stdin(
    scenario: Scenario, tools: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nonce = tools.nonce(scenario.address)
    monkeypatch.setenv("AIRFLOW_CONN_NVFL_REFUND_TEST", scenario.uri)
    code, out, err = run_cli(capsys, "--conn-id", "nvfl_refund_test", "--dry-run", "--json")
    assert code == 1 and json.loads(out)["due"] == [scenario.ids()["due"]]
    monkeypatch.setattr(sys, "stdin", io.StringIO(scenario.uri + "\n"))
    code, out, err = run_cli(
        capsys, "--conn-uri", "-", "--dry-run", "--from-block", "0", "--block-chunk", "9"
    )
    assert code == 1 and "dry run: 1 refund(s) due (3 NVM in all)" in out
    assert tools.nonce(scenario.address) == nonce
    no_key(scenario, out, err)


@pytest.fixture
def rpc_error_server() -> Iterator[str]:
    """An HTTP JSON-RPC endpoint answering every call with an error."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": -32000, "message": "boom"}}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("case", "code", "match"),
    [
        ("unreachable", 3, "unreachable after 1 attempts"),
        ("rpc_error", 3, "chain RPC failed: Web3RPCError"),
        ("wrong_chain", 2, "wrong chain id"),
        ("unknown_conn_id", 2, "isn't defined"),
        ("not_a_uri", 2, "password"),
        ("negative_from_block", 2, "from_block: expected a non-negative integer"),
    ],
)
def test_refund_fails_clearly_without_leaking_the_key(
    devchain: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    rpc_error_server: str,
    case: str,
    code: int,
    match: str,
) -> None:
    key = Account.create().key.to_0x_hex()
    uri = connection_uri(devchain, key)
    argv = {
        "unreachable": ["--conn-uri", connection_uri(devchain, key, rpc_url=dead_rpc(), rpc_retries=1)],
        "rpc_error": ["--conn-uri", connection_uri(devchain, key, rpc_url=rpc_error_server, rpc_retries=1)],
        "wrong_chain": ["--conn-uri", connection_uri(devchain, key, chain_id=1)],
        "unknown_conn_id": ["--conn-id", "nvfl_no_such_connection"],
        "not_a_uri": ["--conn-uri", f"nevermined://{key.removeprefix('0x')}"],
        "negative_from_block": ["--conn-uri", uri, "--from-block", "-1"],
    }[case]
    result, out, err = run_cli(capsys, *argv)
    assert result == code and match in err and err.startswith("nvfl refund: error: ")
    assert out == ""
    for text in (out, err):
        assert key not in text and key.removeprefix("0x") not in text


def dead_rpc() -> str:
    return f"http://127.0.0.1:{process.free_port()}"


def test_a_due_agreement_not_made_by_nvfl_is_reported_failed_and_the_command_exits_non_zero(
    devchain: dict[str, Any], w3: Any, tools: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Created and locked by the consumer with a compute condition of other terms: its ids do not rebuild,
    so it cannot be refunded by its terms; the others are unaffected and the exit code says so."""
    keeper, key = fresh_consumer(devchain, w3, 10 * TOKEN)
    provider = NeverminedHook("nevermined_provider_3")
    session = uuid.uuid4().hex
    did = provider.register_did(
        provider.did_seed(session, "data"), "0x" + "cd" * 32, [provider.address], "http://127.0.0.1/ddo"
    ).did
    did_b, escrow, token, lock = (
        did_bytes(did),
        keeper._addr("EscrowPaymentCondition"),
        keeper.token_address,
        keeper._addr("LockPaymentCondition"),
    )
    hashes = [
        keccak_abi(["bytes32", "address"], [did_b, provider.address]),  # compute for another consumer
        keccak_abi(
            ["bytes32", "address", "address", "uint256[]", "address[]"],
            [did_b, escrow, token, [TOKEN], [provider.address]],
        ),
        os.urandom(32),
    ]
    seed = os.urandom(32)
    keeper._tx(
        "EscrowComputeExecutionTemplate",
        "createAgreement",
        seed,
        did_b,
        hashes,
        [0, 0, 0],
        [2, 0, 0],
        keeper.address,
    )
    keeper._tx("NeverminedToken", "approve", lock, TOKEN)
    agreement_id = "0x" + keccak_abi(["bytes32", "address"], [seed, keeper.address]).hex()
    keeper._tx(
        "LockPaymentCondition",
        "fulfill",
        bytes.fromhex(agreement_id[2:]),
        did_b,
        escrow,
        token,
        [TOKEN],
        [provider.address],
    )
    tools.mine(3)

    [listed] = consumer_agreements(keeper)
    assert (listed.agreement_id, listed.status, listed.amount, listed.agreement) == (
        agreement_id,
        "refund_due",
        "1",
        None,
    )
    assert "do not rebuild" in listed.note
    nonce = tools.nonce(keeper.address)
    code, out, err = run_cli(capsys, "--conn-uri", connection_uri(devchain, key))
    assert code == 1
    assert f"refund of {agreement_id} (1 NVM) failed" in out and "1 refund(s) still due" in out
    assert tools.nonce(keeper.address) == nonce
    assert key.removeprefix("0x") not in out + err


def test_log_ranges_are_bounded_and_a_refused_range_is_halved() -> None:
    assert list(block_ranges(5, 27, 10)) == [(5, 14), (15, 24), (25, 27)]
    assert list(block_ranges(3, 3, 10_000)) == [(3, 3)]
    assert list(block_ranges(4, 3, 10)) == []

    class Node:
        """``get_logs`` of a node refusing ranges of more than ``limit`` blocks (a result-count limit)."""

        def __init__(self, limit: int) -> None:
            self.limit, self.served = limit, []

        def get_logs(self, argument_filters: Any, from_block: int, to_block: int) -> list[int]:
            if to_block - from_block + 1 > self.limit:
                raise Web3RPCError("query returned more than 10000 results")
            self.served.append((from_block, to_block))
            return list(range(from_block, to_block + 1))

    node = Node(limit=4)
    assert _logs(node, {}, 0, 20) == list(range(21))  # type: ignore[arg-type]
    assert all(b - a + 1 <= 4 for a, b in node.served) and node.served[0][0] == 0
    with pytest.raises(Web3RPCError):
        _logs(Node(limit=0), {}, 7, 9)  # type: ignore[arg-type]  # refused down to one block: raised
