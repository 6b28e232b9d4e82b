"""Parallel lock tasks of one consumer: the account lock keeps nonces and the ERC20 allowance consistent."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any

from airflow_nevermined_fl.contracts.account_lock import account_lock
from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

TOKEN = 10**18
PARALLEL = 4
FORK = multiprocessing.get_context("fork")


def _lock_one(barrier: Any, results: Any, session: str, did: str, provider: str, index: int) -> None:
    """One lock task: its own process and hook, started together with the others."""
    consumer = NeverminedHook("nevermined_consumer")
    consumer.get_conn()
    barrier.wait(timeout=60)
    try:
        agreement = consumer.create_compute_agreement(
            consumer.agreement_seed(f"{session}/{index}", provider), did, provider, (index + 1) * TOKEN
        )
        lock_tx = consumer.lock_payment(agreement)
        results.put((index, agreement.to_dict(), agreement.tx_hash, lock_tx, None))
    except Exception as exc:  # reported to the test, which fails on it
        results.put((index, None, None, None, f"{type(exc).__name__}: {exc}"))


def _run_parallel(session: str, did: str, provider: str) -> dict[int, tuple[Any, ...]]:
    barrier, results = FORK.Barrier(PARALLEL), FORK.Queue()
    procs = [
        FORK.Process(target=_lock_one, args=(barrier, results, session, did, provider, i))
        for i in range(PARALLEL)
    ]
    for proc in procs:
        proc.start()
    out = {}
    for _ in procs:
        index, *rest = results.get(timeout=120)
        out[index] = tuple(rest)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return out


def test_parallel_locks_of_one_consumer_each_lock_once(devchain: dict[str, Any], tools: Any) -> None:
    """Four processes lock four agreements of one consumer at once, then all four again (a retry):
    every lock lands, the consumer pays each price exactly once, and the retry sends nothing."""
    consumer, provider = NeverminedHook("nevermined_consumer"), NeverminedHook("nevermined_provider_1")
    session = uuid.uuid4().hex
    seed = provider.did_seed(session, "data")
    asset = provider.register_did(seed, "0x" + "cd" * 32, [provider.address], "http://127.0.0.1/ddo/data")
    balance, nonce = consumer.token_balance(consumer.address), tools.nonce(consumer.address)

    first = _run_parallel(session, asset.did, provider.address)
    assert all(error is None for *_, error in first.values()), first
    assert all(agreement_tx and lock_tx for _, agreement_tx, lock_tx, _ in first.values())
    for agreement, *_ in first.values():
        assert consumer.condition_states(agreement)["lock"] == "fulfilled"
    paid = sum((i + 1) * TOKEN for i in range(PARALLEL))
    assert consumer.token_balance(consumer.address) == balance - paid
    # create + lock for each, plus one approve per lock at most
    sent = tools.nonce(consumer.address) - nonce
    assert 2 * PARALLEL < sent <= 3 * PARALLEL

    after = tools.nonce(consumer.address)
    retry = _run_parallel(session, asset.did, provider.address)
    assert all(error is None for *_, error in retry.values()), retry
    assert all(agreement_tx is None and lock_tx is None for _, agreement_tx, lock_tx, _ in retry.values())
    ids = {i: r[0]["agreement_id"] for i, r in first.items()}
    assert {i: r[0]["agreement_id"] for i, r in retry.items()} == ids
    assert tools.nonce(consumer.address) == after
    assert consumer.token_balance(consumer.address) == balance - paid


def _hold(barrier: Any, log: Any, chain_id: int, address: str, name: str) -> None:
    barrier.wait(timeout=30)
    with account_lock(chain_id, address), account_lock(chain_id, address):  # re-entrant in one process
        log.put((name, "enter", time.monotonic()))
        time.sleep(0.3)
        log.put((name, "exit", time.monotonic()))


def _intervals(accounts: list[str]) -> dict[str, tuple[float, float]]:
    barrier, log = FORK.Barrier(len(accounts)), FORK.Queue()
    procs = [
        FORK.Process(target=_hold, args=(barrier, log, 31337, address, f"p{i}"))
        for i, address in enumerate(accounts)
    ]
    for proc in procs:
        proc.start()
    events = [log.get(timeout=30) for _ in range(2 * len(accounts))]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    times: dict[str, dict[str, float]] = {}
    for name, kind, at in events:
        times.setdefault(name, {})[kind] = at
    return {name: (t["enter"], t["exit"]) for name, t in times.items()}


def test_account_lock_serializes_one_account_across_processes() -> None:
    same = sorted(_intervals(["0x" + "11" * 20] * 3).values())
    for (_, exit_a), (enter_b, _) in zip(same, same[1:], strict=False):
        assert enter_b >= exit_a, same
    # different accounts do not wait for each other
    apart = sorted(_intervals(["0x" + "22" * 20, "0x" + "33" * 20, "0x" + "44" * 20]).values())
    assert apart[-1][0] < apart[0][1], apart
