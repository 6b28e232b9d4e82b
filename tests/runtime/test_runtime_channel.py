"""The secure session channel against real processes: a coordinator over TLS, SeaweedFS, presigned grants.

Misbehaving clients (``channel_client.py``: xain's stubs over the session's TLS channel, seat headers set by
hand) are refused, each refusal logged with its reason and counted in ``/status``, while the honest
participants' session still finishes. A participant given another certificate never reaches the
coordinator. A participant's grants reach its own objects and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.devtools.session_local import (
    Coordinator,
    RuntimeProcess,
    runtime_env,
    start_coordinator,
    start_participant,
    wait_ended,
)
from airflow_nevermined_fl.gateway.channel import key_pair
from airflow_nevermined_fl.runtime.channel import issue, participant_id
from airflow_nevermined_fl.runtime.storage import GLOBAL_KEY, upload_key

HERE = Path(__file__).resolve().parent
REPORT = "NVFL_CLIENT_REPORT "
PROBE_MARKER = b"NVFL-SCOPE-PROBE"
DENIED = "PERMISSION_DENIED"


class Session:
    """A secure coordinator on ``channel`` (seat ``i``: shard ``i``) and the processes started around it; all
    stopped at the end."""

    def __init__(
        self, coordinator: Coordinator, channel: SessionChannel, shards: dict[str, Any], workdir: Path
    ):
        self.coordinator = coordinator
        self.channel = channel
        self.shards = shards
        self.workdir = workdir
        self.procs: list[RuntimeProcess] = [coordinator.process]
        self.cert_file = workdir / "session.crt"
        self.cert_file.write_text(channel.pair.cert_pem)

    @classmethod
    @contextmanager
    def start(
        cls, config: dict[str, Any], channel: SessionChannel, shards: dict[str, Any], workdir: Path
    ) -> Iterator[Session]:
        session = cls(
            start_coordinator(config, workdir / "coordinator", channel=channel), channel, shards, workdir
        )
        try:
            yield session
        finally:
            for proc in session.procs:
                proc.stop()

    def seat_id(self, index: int) -> str:
        return participant_id(self.channel.seats[index].address)

    def participant(self, name: str, seat: int, cert_pem: str | None = None) -> RuntimeProcess:
        """An honest participant on shard ``seat`` with that seat's ticket (``cert_pem``: the certificate
        it is given; the session's by default)."""
        proc = start_participant(
            name,
            self.coordinator.grpc,
            self.shards["providers"][seat]["path"],
            cert_pem or self.channel.pair.cert_pem,
            self.channel.ticket(seat),
            self.workdir,
            heartbeat=0.5,
        )
        self.procs.append(proc)
        return proc

    def start_client(self, name: str, mode: str, *files: Path) -> RuntimeProcess:
        """``channel_client.py`` in the FL venv with a participant's environment (no storage key)."""
        args = [str(HERE / "channel_client.py"), mode, self.coordinator.grpc, str(self.cert_file)]
        proc = RuntimeProcess.start(
            name, [*args, *map(str, files)], self.workdir / f"{name}.log", runtime_env({})
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def report(client: RuntimeProcess) -> Any:
        """The report of a client, once it ended."""
        assert client.wait(90) == 0, client.tail()
        line = next(line for line in client.log.read_text().splitlines() if line.startswith(REPORT))
        return json.loads(line.removeprefix(REPORT))

    def client(self, name: str, mode: str, *files: Path) -> Any:
        """Run a client to its end; its report."""
        return self.report(self.start_client(name, mode, *files))

    def write(self, name: str, content: Any) -> Path:
        path = self.workdir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def wait_connected(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while self.coordinator.status()["participants"]["connected"] != count:
            assert time.monotonic() < deadline, f"not {count} participant(s) connected"
            time.sleep(0.05)

    def log_events(self, event: str) -> list[str]:
        """The coordinator's log lines of ``event``."""
        text = self.coordinator.process.log.read_text()
        return [line for line in text.splitlines() if f"event='{event}'" in line]


@pytest.fixture
def session(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> Iterator[Session]:
    """2 participants a round, 2 rounds of 1 epoch, heartbeat 0.5 s."""
    with Session.start(make_config(rounds=2, epochs=1, min_participants=2), channel, shards, tmp_path) as s:
        yield s


def _wait_for_object(s3_client: Any, bucket: str, key: str) -> None:
    deadline = time.monotonic() + 30
    while not s3_client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents"):
        assert time.monotonic() < deadline, f"no {key}"
        time.sleep(0.05)


def _finish(session: Session, *participants: RuntimeProcess) -> tuple[dict[str, Any], list[int]]:
    status = wait_ended(session.coordinator, 60)
    return status, [proc.wait(30) for proc in participants]


def _assert_finished_by_the_honest(status: dict[str, Any], codes: list[int], rounds: int = 2) -> None:
    assert status["state"] == "FINISHED" and status["rounds_completed"] == rounds, status
    assert [m["participants"] for m in status["rounds_metrics"]] == [2] * rounds
    assert codes == [0] * len(codes)


def test_calls_without_a_valid_credential_are_refused_without_disturbing_the_session(
    session: Session, session_id: str
) -> None:
    """(a) no credential, (b) a wrong one, (c) a duplicate of a held seat, (d) the holder's ticket without
    its seat token; (g) a participant given another certificate than the coordinator's."""
    channel, holder = session.channel, session.channel.seats[0].address
    honest_0 = session.participant("honest-0", 0)
    wrong_cert = session.participant("wrong-cert", 2, cert_pem=key_pair("impostor", 600).cert_pem)
    session.wait_connected(1)  # honest-0 holds seat 0

    unseated_key = "0x" + os.urandom(32).hex()
    unseated = Account.from_key(unseated_key).address.lower()
    other_fingerprint = key_pair(session_id, 600).fingerprint
    not_signed = f"seat credential not signed by {holder} (wrong session or key)"
    wrong_token = f"wrong seat token for {holder} (the seat is held by another)"
    tickets = {
        "unseated": issue(unseated_key, session_id, channel.pair.fingerprint),
        "other-session": issue(channel.keys[0], f"{session_id}-other", channel.pair.fingerprint),
        "other-certificate": issue(channel.keys[0], session_id, other_fingerprint),
        "holder": channel.ticket(0),
    }
    probes = [
        {"case": "a", "call": "Rendezvous", "reason": "no seat credential"},
        {"case": "a", "call": "Heartbeat", "reason": "no seat credential"},
        {"case": "a", "call": "StartTrainingRound", "reason": "no seat credential"},
        {"case": "a", "call": "Rendezvous", "ticket": "", "reason": "no seat credential"},
        {
            "case": "b",
            "call": "Rendezvous",
            "ticket": tickets["unseated"],
            "reason": f"{unseated} has no seat",
        },
        {"case": "b", "call": "Rendezvous", "ticket": tickets["other-session"], "reason": not_signed},
        {"case": "b", "call": "Heartbeat", "ticket": tickets["other-session"], "reason": not_signed},
        {"case": "b", "call": "Rendezvous", "ticket": tickets["other-certificate"], "reason": not_signed},
        {"case": "b", "call": "Rendezvous", "ticket": "not-a-ticket", "reason": "malformed seat credential"},
        {
            "case": "c",
            "call": "Rendezvous",
            "ticket": tickets["holder"],
            "reason": f"the seat of {holder} is already taken (duplicate credential)",
        },
        {"case": "d", "call": "Heartbeat", "ticket": tickets["holder"], "reason": wrong_token},
        {
            "case": "d",
            "call": "Heartbeat",
            "ticket": tickets["holder"],
            "token": "guess",
            "reason": wrong_token,
        },
        {
            "case": "d",
            "call": "StartTrainingRound",
            "ticket": tickets["holder"],
            "token": "",
            "reason": wrong_token,
        },
        {
            "case": "d",
            "call": "EndTrainingRound",
            "ticket": tickets["holder"],
            "token": "guess",
            "upload_id": session.seat_id(0),
            "reason": wrong_token,
        },
    ]
    report = session.client("refused", "probes", session.write("probes.json", probes))

    assert len(report) == len(probes)
    for probe, result in zip(probes, report, strict=True):
        assert (result["case"], result["call"], result["code"]) == (probe["case"], probe["call"], DENIED)
        assert result["details"].startswith("refused: ") and probe["reason"] in result["details"], result
        assert not result["token_granted"]
    # One log line per refused call, in the order of the calls, with the call and the reason.
    refusals = session.log_events("Refused call")
    assert len(refusals) == len(probes), refusals
    for probe, line in zip(probes, refusals, strict=True):
        assert f"call='{probe['call']}'" in line and probe["reason"] in line, (probe, line)
    status = session.coordinator.status()
    assert status["refused_calls"] == len(probes) and status["refused_uploads"] == 0
    # The holder kept its seat and goes on: the session runs when the second provider joins.
    assert honest_0.exit_code() is None and status["participants"]["connected"] == 1
    honest_1 = session.participant("honest-1", 1)
    status, codes = _finish(session, honest_0, honest_1)
    _assert_finished_by_the_honest(status, codes)
    assert status["refused_calls"] == len(probes) and status["refused_uploads"] == 0
    accepted = session.log_events("Accepted participant")
    assert sorted(re.search(r"participant_id='([^']+)'", line)[1] for line in accepted) == sorted(
        [session.seat_id(0), session.seat_id(1)]
    )

    # (g) The participant given another certificate stopped at the TLS handshake: it never reached the
    # coordinator (not accepted, no call refused).
    assert wrong_cert.wait(30) == 1
    assert "TLS certificate is not the one published" in wrong_cert.tail()
    assert not any(
        session.seat_id(2) in line for line in session.coordinator.process.log.read_text().splitlines()
    )


def test_dishonest_ends_of_round_are_refused_and_their_sender_removed(
    session: Session, shards: dict[str, Any], seaweed: dict[str, Any], s3_client: Any, prefix: str
) -> None:
    """(e) an end of round naming another participant's upload; (f) number_samples above the seat's
    declared rows, and 0. Each time the offender took its seat, was selected, got its grants and uploaded
    valid weights; the end of round is refused, the offender removed (its next call: seat not taken)."""
    honest_0 = session.participant("honest-0", 0)
    session.wait_connected(1)
    rows = shards["providers"][2]["rows"]
    victim = session.seat_id(0)
    go = session.workdir / "honest-0-started"
    attempts = [
        {
            "case": "e",
            "upload_id": victim,
            "number_samples": 1,
            "reason": f"the upload '{victim}', not its own",
            # Not before honest-0 started its round (see test_a_removal_does_not_fail_a_selected_participant)
            "wait_for_file": str(go),
        },
        {
            "case": "f",
            "upload_id": None,
            "number_samples": rows + 1,
            "reason": f"{rows + 1} outside 1..{rows}",
        },
        {
            "case": "f",
            "upload_id": None,
            "number_samples": 0,
            "reason": f"number_samples 0 outside 1..{rows}",
        },
    ]
    ticket = session.write("offender.seat", session.channel.ticket(2))
    client = session.start_client("offender", "end-rounds", ticket, session.write("attempts.json", attempts))
    _wait_for_object(s3_client, seaweed["bucket"], f"{prefix}/{upload_key(victim)}")  # honest-0 uploaded
    go.touch()
    report = session.report(client)
    honest_1 = session.participant("honest-1", 1)
    status, codes = _finish(session, honest_0, honest_1)

    offender = session.seat_id(2)
    assert len(report) == len(attempts)
    for attempt, result in zip(attempts, report, strict=True):
        assert result["start"]["code"] == "OK", result
        assert result["start"]["grants"] == ["nvfl-global-sha256", "nvfl-global-url", "nvfl-upload-form"]
        assert (result["get_global"], result["digest_ok"], result["put_upload"]) == (200, True, 204)
        assert result["end"]["code"] == "INVALID_ARGUMENT", result
        assert (
            result["end"]["details"].startswith("upload refused: ")
            and attempt["reason"] in result["end"]["details"]
        )
        assert result["heartbeat_after"]["code"] == DENIED
        assert "is not taken: rendezvous first" in result["heartbeat_after"]["details"]
    refused = session.log_events("Refused upload")
    assert len(refused) == len(attempts)
    for attempt, line in zip(attempts, refused, strict=True):
        assert f"participant_id='{offender}'" in line and attempt["reason"] in line, line
    removed = [line for line in session.log_events("Removing participant") if offender in line]
    assert len(removed) == len(attempts)
    assert status["refused_uploads"] == len(attempts)
    assert status["refused_calls"] == len(attempts)  # the offender's heartbeat after each removal
    _assert_finished_by_the_honest(status, codes)  # each round aggregated from the two honest uploads


def test_a_participant_reaches_its_own_objects_and_nothing_else(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    seaweed: dict[str, Any],
    s3_client: Any,
    prefix: str,
    tmp_path: Path,
) -> None:
    """With what a participant process gets (its environment: no storage key; its seat file, the session
    certificate, the grants the coordinator hands it with StartTrainingRound), real HTTP requests to
    SeaweedFS outside its grants are all refused (403), its own grants work; its upload grant refuses a body
    100 times the model's (it would fill the coordinator provider's bucket); the session finishes."""
    bucket = seaweed["bucket"]
    other = participant_id(channel.seats[1].address)
    data_key = f"datasets/{prefix}/provider-1.npz"  # another provider's dataset, in the same bucket
    data = Path(shards["providers"][1]["path"]).read_bytes()
    s3_client.put_object(Bucket=bucket, Key=data_key, Body=data)
    # The other participant's upload exists from the start (it overwrites this when it uploads).
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{upload_key(other)}", Body=b"placeholder")
    targets = {
        "bucket": bucket,
        "other_upload": f"/{bucket}/{prefix}/{upload_key(other)}",
        "other_data": f"/{bucket}/{data_key}",
    }

    config = make_config(rounds=1, epochs=1, min_participants=2)
    with Session.start(config, channel, shards, tmp_path) as session:
        honest = session.participant("honest-1", 1)
        session.wait_connected(1)
        ticket = session.write("prober.seat", channel.ticket(0))
        report = session.client("prober", "scope", ticket, session.write("targets.json", targets))
        status, codes = _finish(session, honest)

    assert report["credential_env"] == []  # no storage key, nothing like one
    assert report["start"]["code"] == "OK" and report["participant_id"] == session.seat_id(0)
    assert report["own_upload_path"] == f"/{bucket}/{prefix}/{upload_key(report['participant_id'])}"
    outside = [r for r in report["requests"] if not r["in_scope"]]
    assert len(outside) >= 10
    assert [r for r in outside if r["status"] != 403] == [], outside
    assert sum(200 <= r["status"] < 300 for r in outside) == 0  # no access outside its scope
    assert [r["status"] for r in report["requests"] if r["in_scope"]] == [200, 204]
    assert report["oversize"]["status"] == 400 and "EntityTooLarge" in report["oversize"]["body"]
    assert report["digest_ok"] and report["end"]["code"] == "OK"
    assert status["state"] == "FINISHED" and status["rounds_metrics"][0]["participants"] == 2
    assert status["refused_calls"] == 0 and status["refused_uploads"] == 0 and codes == [0]
    # Nothing outside its grants was written: no object carries the probe's body, the data is intact.
    assert s3_client.get_object(Bucket=bucket, Key=data_key)["Body"].read() == data
    keys = [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert f"{prefix}/{GLOBAL_KEY}" in keys and f"{prefix}/{upload_key(other)}" in keys
    for key in keys:
        assert PROBE_MARKER not in s3_client.get_object(Bucket=bucket, Key=key)["Body"].read(), key


def test_a_removal_does_not_fail_a_selected_participant(session: Session) -> None:
    """An offender removed between another participant's selection (its heartbeat said ROUND) and that
    participant's StartTrainingRound must not cost that participant its round: the round is suspended, not
    called off, and it starts it (the SDK never starts a round number twice; see test_runtime_race)."""
    tickets = {"honest": session.channel.ticket(0), "offender": session.channel.ticket(2)}
    report = session.client("interleave", "interleave", session.write("tickets.json", tickets))
    assert report["offender_end"]["code"] == "INVALID_ARGUMENT"
    assert report["honest_start"]["code"] == "OK", report
