"""The coordinator under hostile traffic, against real processes (TLS, SeaweedFS, grants).

A flood of forged-ticket calls while an honest session runs: the session finishes with every seat, each
refused call is counted, and the log holds a bounded number of lines (a burst, then summaries that account
for the rest). Finite but absurd uploads (``channel_client.py``'s ``fill``): each is refused, its sender
removed, the honest participants finish and the published model is finite.
"""

from __future__ import annotations

import importlib.util
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runtime_channel import DENIED, Session, _assert_finished_by_the_honest, _finish

from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.paths import PROJECT_DIR

CALLS, THREADS = 10_000, 4


def _bench_flood() -> Callable[..., Counter[str]]:
    spec = importlib.util.spec_from_file_location("bench_flood", PROJECT_DIR / "bench" / "flood.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.flood


@pytest.fixture
def long_session(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> Iterator[Session]:
    """3 participants, 10 rounds of 1 epoch; the ended coordinator lingers up to 60 s (the flood may outlast
    the rounds: its calls are still answered and counted) until the test stops it."""
    config = make_config(rounds=10, epochs=1, min_participants=3, linger=60)
    with Session.start(config, channel, shards, tmp_path) as s:
        yield s


def test_a_flood_of_forged_tickets_costs_little_and_logs_little(long_session: Session) -> None:
    session = long_session
    honest = [session.participant(f"honest-{i}", i) for i in range(3)]
    session.wait_connected(3)

    flood = _bench_flood()
    calls = flood(session.coordinator.grpc, session.channel.pair.cert_pem, CALLS, THREADS)
    status, codes = _finish(session, *honest)

    # Every call refused: each a signature recovery until its host's bucket ran dry, then at once.
    assert sum(calls.values()) == CALLS and set(calls) <= {DENIED, "RESOURCE_EXHAUSTED"}, calls
    assert calls["RESOURCE_EXHAUSTED"] > calls[DENIED] > 0
    assert status["refused_calls"] == CALLS
    # The honest session did not notice: every round with all three, nobody dropped.
    assert status["state"] == "FINISHED" and status["rounds_completed"] == 10, status
    assert [m["participants"] for m in status["rounds_metrics"]] == [3] * 10
    assert codes == [0, 0, 0]
    assert session.log_events("Heartbeat expired") == [] and session.log_events("Removing participant") == []

    # The log: a bounded burst of lines, then summaries whose counts account for every other refusal (the
    # last summary written when the coordinator stops).
    session.coordinator.process.stop()
    assert session.coordinator.process.exit_code() == 0
    lines, summaries = session.log_events("Refused call"), session.log_events("Refused calls")
    not_logged = sum(int(re.search(r"not_logged=(\d+)", line)[1]) for line in summaries)
    assert len(lines) + not_logged == CALLS
    assert len(lines) < 200 and 1 <= len(summaries) < 20, (len(lines), len(summaries))


ROUNDS = 16
"""Enough for the offender to join, be selected, be removed and do it again while the honest ones go on."""


@pytest.mark.parametrize(
    ("overrides", "fill", "samples", "reason"),
    [
        ({}, 1.7e308, 1, "above the bound"),  # each finite, two of them sum to inf
        ({"max_update_norm": 1e308}, 1e306, "rows", "weighted sum with this upload is not finite"),
    ],
    ids=["update-norm", "weighted-sum"],
)
def test_finite_but_absurd_uploads_are_refused_and_the_model_stays_finite(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
    s3_client: Any,
    seaweed: dict[str, Any],
    prefix: str,
    overrides: dict[str, Any],
    fill: float,
    samples: Any,
    reason: str,
) -> None:
    """Two honest participants run the session; an offender joins, is selected, uploads finite but huge
    weights: refused (INVALID_ARGUMENT), removed; it does it again. The round goes on with the honest ones."""
    config = make_config(rounds=ROUNDS, epochs=1, min_participants=2, **overrides)
    with Session.start(config, channel, shards, tmp_path) as session:
        honest = [session.participant(f"honest-{i}", i) for i in range(2)]
        session.wait_connected(2)
        number_samples = shards["providers"][2]["rows"] if samples == "rows" else samples
        attempts = [{"case": "huge", "upload_id": None, "number_samples": number_samples, "fill": fill}] * 2
        ticket = session.write("offender.seat", session.channel.ticket(2))
        report = session.client("offender", "end-rounds", ticket, session.write("attempts.json", attempts))
        status, codes = _finish(session, *honest)

    offender = session.seat_id(2)
    assert len(report) == 2
    for result in report:
        assert result["put_upload"] == 204 and result["end"]["code"] == "INVALID_ARGUMENT", result
        assert result["end"]["details"].startswith("upload refused: ") and reason in result["end"]["details"]
        assert result["heartbeat_after"]["code"] == DENIED  # removed
    refused = session.log_events("Refused upload")
    assert len(refused) == 2 and all(f"participant_id='{offender}'" in line for line in refused), refused
    assert status["refused_uploads"] == 2
    _assert_finished_by_the_honest(status, codes, ROUNDS)
    body = s3_client.get_object(Bucket=seaweed["bucket"], Key=f"{prefix}/model/final.npz")["Body"].read()
    weights = np.load(io.BytesIO(body))["weights"]
    assert np.isfinite(weights).all() and np.abs(weights).max() < 1e3
