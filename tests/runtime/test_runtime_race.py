"""A refused upload must not cost the honest participants their round, against real processes.

An offender's upload is refused and it is removed in the middle of a round, which leaves the round short of
``min_participants``. The honest participants selected for that round, whether they started it before the
removal or after, still start it, upload and end it (``race_client.py``): their uploads are held, never
refused, and count when the round is refilled; a round that cannot be refilled fails the session on the
stall timer with a reason that names the removal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_runtime_channel import HERE, REPORT, Session, _finish

from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.devtools.session_local import RuntimeProcess, runtime_env

HUGE = 1.7e308  # finite, far above the update-norm bound


def _client(session: Session, spec: dict[str, Any]) -> RuntimeProcess:
    """``race_client.py`` on ``spec``."""
    args = [str(HERE / "race_client.py"), session.coordinator.grpc, str(session.cert_file)]
    args.append(str(session.write("race.json", spec)))
    proc = RuntimeProcess.start("race", args, session.workdir / "race.log", runtime_env({}))
    session.procs.append(proc)
    return proc


def _race(session: Session, early: list[int], late: list[int], offender: int) -> tuple[RuntimeProcess, Path]:
    """``race_client.py`` playing seats ``early`` and ``late`` honestly and ``offender`` not; the file it
    touches once the honest ones ended their round."""
    held = session.workdir / "held"
    spec = {
        "early": [session.channel.ticket(i) for i in early],
        "late": [session.channel.ticket(i) for i in late],
        "offender": session.channel.ticket(offender),
        "fill": HUGE,
        "held_file": str(held),
    }
    return _client(session, spec), held


def _report(client: RuntimeProcess) -> dict[str, Any]:
    assert client.wait(150) == 0, client.tail()
    line = next(line for line in client.log.read_text().splitlines() if line.startswith(REPORT))
    return json.loads(line.removeprefix(REPORT))


def _wait_for(path: Path, client: RuntimeProcess) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert client.exit_code() is None and time.monotonic() < deadline, client.tail()
        time.sleep(0.05)


def _assert_honest_kept(report: dict[str, Any], honest: list[str], offender: str) -> None:
    """The offender was refused; every honest seat started, ended its round and kept its seat."""
    assert report["offender_end"]["code"] == "INVALID_ARGUMENT", report
    assert "above the bound" in report["offender_end"]["details"]
    assert offender not in report["end"]
    for seat in honest:
        assert report["start"][seat] == "OK", report
        assert report["end"][seat]["code"] == "OK", report
        assert report["heartbeat_after"][seat]["code"] == "OK", report
        # The round waits for a seat to be refilled: not a round the honest ones should start again.
        assert report["heartbeat_suspended"][seat]["state"] == "STANDBY", report


def test_honest_uploads_of_a_suspended_round_count_when_it_resumes(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> None:
    """3 seats, min_participants 3: the offender (seat 2) is removed mid-round; seat 0 started before, seat 1
    after; both end the round. Seat 2's provider rejoins with an honest participant: the round resumes and
    is aggregated from all three, the held uploads included."""
    config = make_config(rounds=1, epochs=1, min_participants=3)
    with Session.start(config, channel, shards, tmp_path) as session:
        client, held = _race(session, early=[0], late=[1], offender=2)
        _wait_for(held, client)
        rejoined = session.participant("rejoined", 2)
        status, codes = _finish(session, rejoined)
        report = _report(client)

    honest, offender = [session.seat_id(0), session.seat_id(1)], session.seat_id(2)
    _assert_honest_kept(report, honest, offender)
    assert {seat: answer["state"] for seat, answer in report["last"].items()} == dict.fromkeys(
        honest, "FINISHED"
    )
    assert status["state"] == "FINISHED" and codes == [0], status
    (metrics,) = status["rounds_metrics"]
    assert metrics["participants"] == 3 and metrics["refused_uploads"] == 1, metrics
    assert metrics["n_samples"] > 2  # the two held uploads (1 sample each) and the rejoined one's
    assert status["refused_uploads"] == 1
    removed = session.log_events("Removing participant")
    assert len(removed) == 1 and offender in removed[0], removed
    assert len(session.log_events("Upload held")) == 2


def test_a_suspended_round_that_is_not_refilled_fails_with_the_reason(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> None:
    """2 of 2: the offender is removed mid-round and nobody takes its seat. The honest participant's end of
    round is accepted and it stays seated; the session fails on the stall timer, saying why."""
    config = make_config(rounds=2, epochs=1, min_participants=2, stall_timeout=4, linger=1)
    with Session.start(config, channel, shards, tmp_path) as session:
        client, _ = _race(session, early=[0], late=[], offender=2)
        status, _ = _finish(session)
        report = _report(client)

    honest, offender = session.seat_id(0), session.seat_id(2)
    _assert_honest_kept(report, [honest], offender)
    assert report["last"][honest]["code"] == "UNAVAILABLE"  # seated until the coordinator stopped
    assert status["state"] == "FAILED" and status["rounds_completed"] == 0, status
    reason = status["reason"]
    assert "no progress for 4s in state STANDBY, round 0: 1 participant(s) connected, 2 needed" in reason
    assert f"round 0 suspended since {offender} was removed (upload refused: update norm" in reason, reason
    assert "1 upload(s) held" in reason, reason
    removed = session.log_events("Removing participant")
    assert len(removed) == 1 and offender in removed[0], removed


def test_a_participant_removed_after_its_upload_can_play_the_round_again(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> None:
    """2 of 2: one participant ends its round, then its heartbeat expires (removed, the round suspended); it
    takes its seat again and is selected for the same round: its new end of round is accepted (its earlier
    upload went with its removal), and the round is aggregated from the two."""
    config = make_config(rounds=1, epochs=1, min_participants=2)
    with Session.start(config, channel, shards, tmp_path) as session:
        client = _client(session, {"stayed": channel.ticket(0), "dropped": channel.ticket(1)})
        status, _ = _finish(session)
        report = _report(client)

    stayed, dropped = session.seat_id(0), session.seat_id(1)
    assert [end["code"] for end in report["dropped"]] == ["OK", "OK"], report
    assert report["stayed"]["code"] == "OK", report
    assert {seat: answer["state"] for seat, answer in report["last"].items()} == {
        stayed: "FINISHED",
        dropped: "FINISHED",
    }
    assert status["state"] == "FINISHED" and status["rounds_metrics"][0]["participants"] == 2, status
    expired = session.log_events("Heartbeat expired")
    assert len(expired) == 1 and dropped in expired[0], expired
