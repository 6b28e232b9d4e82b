"""Gas used per keeper step, and `devstack` chain up time cold (compile + deploy) vs warm (deploy only).

    .venv/bin/python bench/chain_gas.py

Cold uses an empty temporary NVFL_CACHE, so the contracts are compiled; warm reuses that cache.
Everything runs on a throw-away anvil on a free 127.0.0.1 port, stopped at the end.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_nevermined_fl.contracts.client import connect
from airflow_nevermined_fl.devtools.devstack import chain

TOKEN = 10**18


def timed_up(home: Path) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    state = chain.up(home, None)
    return time.perf_counter() - start, state


def gas_between(w3: Any, first_block: int, last_block: int) -> tuple[int, int]:
    """(gas used, transactions) of the blocks in ``(first_block, last_block]``."""
    gas = txs = 0
    for number in range(first_block + 1, last_block + 1):
        block = w3.eth.get_block(number)
        gas += block["gasUsed"]
        txs += len(block["transactions"])
    return gas, txs


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NVFL_CACHE"] = str(Path(tmp) / "cache")
        cold, state = timed_up(Path(tmp) / "cold")
        chain.down(state)
        warm, state = timed_up(Path(tmp) / "warm")
        try:
            w3 = connect(state["rpc_url"])
            deploy_gas, deploy_txs = gas_between(w3, 0, w3.eth.block_number)
            print(
                f"devstack chain up: cold (compile + deploy) {cold:.1f} s, warm (deploy) {warm:.1f} s,"
                f" cold/warm = {cold / warm:.1f}x"
            )
            print(f"deploy + initialize + wiring + mint: {deploy_gas} gas in {deploy_txs} transactions")
            steps(state, w3)
        finally:
            chain.down(state)


def steps(state: dict[str, Any], w3: Any) -> None:
    for conn_id, uri in chain.connection_uris(state).items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = uri
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

    consumer, provider = NeverminedHook("nevermined_consumer"), NeverminedHook("nevermined_provider_1")
    consumer.get_conn(), provider.get_conn()
    session = uuid.uuid4().hex
    rows: list[tuple[str, int, int]] = []

    def step(name: str, call: Callable[[], Any]) -> Any:
        first = w3.eth.block_number
        result = call()
        rows.append((name, *gas_between(w3, first, w3.eth.block_number)))
        return result

    asset = step(
        "register_did (provider)",
        lambda: provider.register_did(
            provider.did_seed(session, "data"), "0x" + "ab" * 32, [provider.address], "http://127.0.0.1/ddo"
        ),
    )

    def agreement(name: str, time_out: int) -> Any:
        seed = consumer.agreement_seed(f"{session}-{name}", provider.address)
        return step(
            f"create_compute_agreement ({name})",
            lambda: consumer.create_compute_agreement(
                seed, asset.did, provider.address, TOKEN, time_out=time_out
            ),
        )

    paid = agreement("paid", 0)
    step("lock_payment (approve + fulfill)", lambda: consumer.lock_payment(paid))
    step("fulfill_compute (provider)", lambda: provider.fulfill_compute(paid))
    step("release_escrow", lambda: provider.release_escrow(paid))
    step(
        "re-run of lock/fulfill/release",
        lambda: [consumer.lock_payment(paid), provider.fulfill_compute(paid), provider.release_escrow(paid)],
    )
    refunded = agreement("refunded", 1)
    step("lock_payment (approve + fulfill)", lambda: consumer.lock_payment(refunded))
    w3.provider.make_request("anvil_mine", ["0x3"])
    step("refund (abortByTimeOut + escrow)", lambda: consumer.refund(refunded))
    workflow = step(
        "register_did (workflow, consumer)",
        lambda: consumer.register_did(
            consumer.did_seed(session, "workflow"),
            "0x" + "cd" * 32,
            [provider.address],
            "http://127.0.0.1/wf",
        ),
    )
    model = consumer.register_did(
        consumer.did_seed(session, "model"), "0x" + "ef" * 32, [], "http://127.0.0.1/m"
    )
    step("record_provenance (1 source)", lambda: consumer.record_provenance(model.did, [workflow.did], "fl"))
    print(f"{'step':40} {'gas':>9} {'txs':>4}")
    for name, gas, txs in rows:
        print(f"{name:40} {gas:>9} {txs:>4}")


if __name__ == "__main__":
    main()
