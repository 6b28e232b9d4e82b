"""Real sessions: coordinator and participants as FL-venv processes against a real SeaweedFS, on the secure
session channel (TLS, seat tickets, storage grants: no participant holds a storage key); the stock xain-sdk
compatibility in a ``stock_sdk`` session."""

from __future__ import annotations

import io
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airflow_nevermined_fl.devtools.session_channel import SessionChannel, write_files
from airflow_nevermined_fl.devtools.session_local import (
    Coordinator,
    LocalSession,
    RuntimeProcess,
    runtime_env,
    start_coordinator,
    start_participant,
    wait_ended,
)
from airflow_nevermined_fl.gateway.channel import key_pair
from airflow_nevermined_fl.gateway.launchers.base import PEER_CERT_FILE, SEAT_FILE
from airflow_nevermined_fl.runtime import arrays
from airflow_nevermined_fl.runtime.softmax import SoftmaxRegression, held_out
from airflow_nevermined_fl.runtime.status import fetch, pinned_context
from airflow_nevermined_fl.runtime.storage import GLOBAL_KEY
from airflow_nevermined_fl.runtime.workload import participant_args

HERE = Path(__file__).resolve().parent


def _participants(
    coordinator: Coordinator,
    channel: SessionChannel,
    shards: dict[str, Any],
    workdir: Path,
    count: int = 3,
    extra: tuple[str, ...] = (),
) -> list[RuntimeProcess]:
    """Participant ``i``: shard ``i``, seat ``i``'s ticket, the session certificate (no storage key)."""
    return [
        start_participant(
            f"participant-{i}",
            coordinator.grpc,
            shards["providers"][i]["path"],
            channel.pair.cert_pem,
            channel.ticket(i),
            workdir,
            heartbeat=0.5,
            extra_args=extra,
        )
        for i in range(count)
    ]


@contextmanager
def _session(
    config: dict[str, Any],
    channel: SessionChannel,
    shards: dict[str, Any],
    workdir: Path,
    extra: tuple[str, ...] = (),
) -> Iterator[tuple[Coordinator, list[RuntimeProcess]]]:
    """A secure coordinator for ``config`` on ``channel`` and three participants; every process stopped on
    exit."""
    coordinator = start_coordinator(config, workdir, channel=channel)
    procs = [coordinator.process]
    try:
        participants = _participants(coordinator, channel, shards, workdir, extra=extra)
        procs += participants
        yield coordinator, participants
    finally:
        _stop_all(procs)


def _sdk_storage(s3_client: Any, seaweed: dict[str, Any], name: str) -> dict[str, str]:
    """A fresh bucket ``<name>-<hex>`` laid out as stock xain-sdk clients use it (weights at its root)."""
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    return {"endpoint": seaweed["endpoint"], "bucket": bucket, "prefix": ""}


def _start_sdk_client(
    script: str,
    coordinator: Coordinator,
    storage: dict[str, str],
    args: list[str],
    workdir: Path,
    env: dict[str, str],
    name: str | None = None,
) -> RuntimeProcess:
    """``<script>_participant.py`` (a stock xain-sdk client) against a ``stock_sdk`` ``coordinator``, weights
    in ``storage`` with the S3 keys of ``env``."""
    host, port = coordinator.grpc.split(":")
    argv = [str(HERE / f"{script}_participant.py"), host, port, storage["endpoint"], storage["bucket"], *args]
    name = name or script
    return RuntimeProcess.start(name, argv, workdir / f"{name}.log", runtime_env(env))


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def _stop_all(procs: list[RuntimeProcess]) -> None:
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def finished(seaweed: dict[str, Any], s3_env: dict[str, str]) -> dict[str, Any]:
    """`nvfl session local`'s engine: 3 participants, non-IID digits, 5 rounds."""
    saved = {key: os.environ.get(key) for key in s3_env}
    os.environ.update(s3_env)
    try:
        return LocalSession(
            participants=3, rounds=5, s3_endpoint=seaweed["endpoint"], bucket=seaweed["bucket"]
        ).run()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_three_participant_non_iid_session_reaches_accuracy(
    finished: dict[str, Any], seaweed: dict[str, Any], s3_client: Any
) -> None:
    assert finished["state"] == "FINISHED", finished
    assert finished["final_accuracy"] >= 0.90, finished["final_accuracy"]
    assert finished["exit_codes"] == {
        "coordinator": 0,
        "participant-0": 0,
        "participant-1": 0,
        "participant-2": 0,
    }
    metrics = finished["rounds_metrics"]
    assert [m["round"] for m in metrics] == [0, 1, 2, 3, 4] and finished["rounds_completed"] == 5
    for m in metrics:
        assert m["participants"] == 3 and m["n_samples"] > 0 and 0 < m["accuracy"] <= 1 and m["loss"] > 0
        assert m["finished"] >= m["started"] and m["duration"] == pytest.approx(m["finished"] - m["started"])
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    # The final model and its metadata are in the bucket, checksum as reported.
    model = finished["model"]
    key = model["url"].split("/", 3)[3]
    body = s3_client.get_object(Bucket=seaweed["bucket"], Key=key)["Body"].read()
    import hashlib

    assert hashlib.sha256(body).hexdigest() == model["sha256"]
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        assert npz["W"].shape == (64, 10) and npz["b"].shape == (10,)
    meta_key = model["metadata_url"].split("/", 3)[3]
    metadata = json.loads(s3_client.get_object(Bucket=seaweed["bucket"], Key=meta_key)["Body"].read())
    assert metadata["session_id"] == finished["session_id"] and metadata["model"]["sha256"] == model["sha256"]
    assert len(metadata["rounds_metrics"]) == 5


def test_warm_start_begins_from_the_initial_model(
    finished: dict[str, Any],
    make_config: Callable[..., dict[str, Any]],
    make_channel: Callable[..., SessionChannel],
    prefix: str,
    shards: dict[str, Any],
    seaweed: dict[str, Any],
    s3_client: Any,
    tmp_path: Path,
) -> None:
    url = finished["model"]["url"]
    channel = make_channel(url)  # its grants include a read of the warm-start model
    config = make_config(rounds=2, epochs=1, initial_model=url, channel=channel.spec.to_dict())
    final_key = url.split("/", 3)[3]
    with np.load(
        io.BytesIO(s3_client.get_object(Bucket=seaweed["bucket"], Key=final_key)["Body"].read())
    ) as npz:
        trained = npz["weights"]
    coordinator = start_coordinator(config, tmp_path, channel=channel)
    procs = [coordinator.process]
    try:
        # Round 0's global model, written before the coordinator serves, is the warm-start model.
        body = s3_client.get_object(Bucket=seaweed["bucket"], Key=f"{prefix}/{GLOBAL_KEY}")["Body"].read()
        initial = arrays.decode(body, arrays.ArraySpec(shape=trained.shape), len(body))
        assert np.array_equal(initial, trained)
        procs += _participants(coordinator, channel, shards, tmp_path)
        status = wait_ended(coordinator, 60)
    finally:
        _stop_all(procs)
    assert status["state"] == "FINISHED"
    assert (
        status["rounds_metrics"][0]["accuracy"] >= 0.88
    )  # already trained: one epoch from zeros is far lower
    _assert_federated_evaluation(status["rounds_metrics"], trained, shards)


def _held_out_parts(shards: dict[str, Any]) -> list[tuple[np.ndarray, ...]]:
    """Per shard, as the participant splits it (``--val-fraction 0.15 --seed 0``): held-out ``x``, ``y``,
    trained-on ``x``, ``y``, and the generator its training goes on with."""
    parts = []
    for provider in shards["providers"]:
        with np.load(provider["path"]) as npz:
            x, y = npz["x"].astype(np.float64), npz["y"].astype(np.int64)
        rng = np.random.default_rng(0)
        val, train = held_out(len(y), 0.15, rng)
        parts.append((x[val], y[val], x[train], y[train], rng))
    return parts


def test_a_custom_model_starts_from_the_participants_init_round(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A ``module:Class`` model: the coordinator starts with no weights, xain's init round takes the
    participants' initial weights (0 samples: nothing trained), then every round trains."""
    config = make_config(rounds=2, epochs=1, model={"name": "custom"})  # what a gateway renders
    coordinator = start_coordinator(config, tmp_path, channel=channel)
    procs = [coordinator.process]
    try:
        for i in range(3):
            files = tmp_path / f"centroids-{i}"
            write_files(files, {PEER_CERT_FILE: channel.pair.cert_pem}, {SEAT_FILE: channel.ticket(i)})
            args = participant_args(
                coordinator.grpc,
                str(files / PEER_CERT_FILE),
                str(files / SEAT_FILE),
                data=shards["providers"][i]["path"],
                model="centroid_participant:Centroids",
                heartbeat=0.5,
            )
            script = [str(HERE / "centroid_participant.py"), *args]
            procs.append(RuntimeProcess.start(f"centroids-{i}", script, files / "log", runtime_env({})))
        status = wait_ended(coordinator, 60)
    finally:
        _stop_all(procs)
    assert status["state"] == "FINISHED", status
    assert status["refused_uploads"] == 0 and len(status["rounds_metrics"]) == 2, status


def test_a_participant_lying_about_its_evaluation_weighs_no_more_than_its_samples(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The third participant claims its global model scored 1.0 on 10**9 held-out rows with a loss of -5:
    its loss is dropped (out of range), its rows count as its training samples."""
    coordinator = start_coordinator(make_config(rounds=1, epochs=1), tmp_path, channel=channel)
    procs = [coordinator.process]
    try:
        procs += _participants(coordinator, channel, shards, tmp_path, count=2)
        files = tmp_path / "liar"
        write_files(files, {PEER_CERT_FILE: channel.pair.cert_pem}, {SEAT_FILE: channel.ticket(2)})
        args = participant_args(
            coordinator.grpc,
            str(files / PEER_CERT_FILE),
            str(files / SEAT_FILE),
            data=shards["providers"][2]["path"],
            model="lying_participant:Liar",
            heartbeat=0.5,
        )
        procs.append(
            RuntimeProcess.start(
                "liar", [str(HERE / "lying_participant.py"), *args], tmp_path / "liar.log", runtime_env({})
            )
        )
        status = wait_ended(coordinator, 60)
    finally:
        _stop_all(procs)
    assert status["state"] == "FINISHED", status
    (m,) = status["rounds_metrics"]
    model, parts = SoftmaxRegression(64, 10), _held_out_parts(shards)
    zeros = model.init_weights()  # round 0's global model
    honest = [(len(y_val), model.evaluate(zeros, x_val, y_val)) for x_val, y_val, *_ in parts[:2]]
    liar_samples = len(parts[2][3])
    rows = sum(n for n, _ in honest) + liar_samples
    assert m["global_rows"] == rows
    assert m["global_accuracy"] == pytest.approx((sum(n * s[1] for n, s in honest) + liar_samples) / rows)
    assert m["global_loss"] == pytest.approx(sum(n * s[0] for n, s in honest) / sum(n for n, _ in honest))


def _assert_federated_evaluation(
    metrics: list[dict[str, Any]], initial: np.ndarray, shards: dict[str, Any]
) -> None:
    """Each round's ``global_accuracy``/``global_loss`` is the score of the global model the participants
    received, on their held-out rows (the participant's defaults: ``--val-fraction 0.15 --seed 0``), weighted
    by those rows: round 0's is the initial model read from storage, round 1's the FedAvg of round 0's
    uploads, retrained here as each participant did (one epoch)."""
    model, parts = SoftmaxRegression(64, 10), _held_out_parts(shards)
    rows = sum(len(y_val) for _, y_val, *_ in parts)

    def federated(weights: np.ndarray) -> tuple[float, float]:
        scores = [(len(y_val), model.evaluate(weights, x_val, y_val)) for x_val, y_val, *_ in parts]
        return tuple(sum(n * score[k] for n, score in scores) / rows for k in (0, 1))  # type: ignore[return-value]

    uploads = [(len(y_t), model.sgd_epoch(initial, x_t, y_t, rng, 0.5, 32)) for _, _, x_t, y_t, rng in parts]
    round1 = sum(n * w for n, w in uploads) / sum(n for n, _ in uploads)
    for m, weights in zip(metrics, (initial, round1), strict=True):
        loss, accuracy = federated(weights)
        assert m["global_rows"] == rows
        assert m["global_accuracy"] == pytest.approx(accuracy) and m["global_loss"] == pytest.approx(loss)
    assert metrics[1]["global_loss"] != pytest.approx(federated(initial)[0])  # not round 0's, again


def test_stock_xain_sdk_participants_join_a_stock_sdk_session_and_finish(
    make_config: Callable[..., dict[str, Any]],
    shards: dict[str, Any],
    seaweed: dict[str, Any],
    s3_env: dict[str, str],
    s3_client: Any,
    fl_python: Path,
    tmp_path: Path,
) -> None:
    """Unmodified xain-sdk 0.6 clients only (plaintext gRPC, bucket keys, pickles, the SDK's 10 s heartbeat)
    in an (insecure) ``stock_sdk`` session."""
    storage = _sdk_storage(s3_client, seaweed, "stock")
    bucket = storage["bucket"]
    config = make_config(
        stock_sdk=True,
        rounds=2,
        epochs=1,
        min_participants=2,
        heartbeat_period=10,  # the SDK's fixed HEARTBEAT_TIME
        heartbeat_timeout=5,
        linger=12,
        storage=storage,  # stock SDK: no prefix
    )
    assert "channel" not in config
    coordinator = start_coordinator(config, tmp_path, s3_env)
    stock = [
        _start_sdk_client(
            "stock", coordinator, storage, [shards["providers"][i]["path"]], tmp_path, s3_env, f"stock-{i}"
        )
        for i in range(2)
    ]
    procs = [coordinator.process, *stock]
    try:
        status = wait_ended(coordinator, 90)
        codes = [proc.wait(30) for proc in stock]
    finally:
        _stop_all(procs)
    assert status["state"] == "FINISHED", stock[0].tail()
    assert codes == [0, 0], [proc.tail() for proc in stock]
    assert [m["participants"] for m in status["rounds_metrics"]] == [2, 2]
    assert status["refused_uploads"] == 0 and status["refused_calls"] == 0
    keys = {item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"0/global", "1/global", "2/global", "model/final.npz", "model/metadata.json"} <= keys
    # xain 0.6's layout: the global model is a pickle, read back by the hardened loader.
    body = s3_client.get_object(Bucket=bucket, Key="2/global")["Body"].read()
    weights = arrays.loads_pickle(body, arrays.ArraySpec(shape=(650,)), len(body))
    assert weights.shape == (650,) and np.isfinite(weights).all()


def test_malicious_pickle_is_refused_not_executed_and_session_finishes(
    make_config: Callable[..., dict[str, Any]],
    shards: dict[str, Any],
    seaweed: dict[str, Any],
    s3_env: dict[str, str],
    s3_client: Any,
    tmp_path: Path,
) -> None:
    """A stock_sdk session reads stock clients' pickles from the bucket (arrays.loads_pickle): an upload that
    would run code is refused, its sender removed, and a spare takes its place."""
    marker = tmp_path / "executed-marker"
    storage = _sdk_storage(s3_client, seaweed, "evil")
    config = make_config(stock_sdk=True, min_participants=2, storage=storage)
    coordinator = start_coordinator(config, tmp_path, s3_env)
    evil = _start_sdk_client("evil", coordinator, storage, [str(marker), "0.5"], tmp_path, s3_env)
    procs = [coordinator.process, evil]
    try:
        _wait_for(lambda: coordinator.status()["participants"]["connected"] == 1, 30, "evil joined")
        # Two honest stock clients: one completes the seat of the evil one, the other waits as a spare.
        honest = [
            _start_sdk_client(
                "stock",
                coordinator,
                storage,
                [shards["providers"][i]["path"], "0.5"],
                tmp_path,
                s3_env,
                f"honest-{i}",
            )
            for i in range(2)
        ]
        procs += honest
        status = wait_ended(coordinator, 90)
        codes = [proc.wait(30) for proc in honest]
        evil_code = evil.wait(30)
    finally:
        _stop_all(procs)
    assert status["state"] == "FINISHED" and status["rounds_completed"] == 3
    assert status["refused_uploads"] == 1
    assert sum(m["refused_uploads"] for m in status["rounds_metrics"]) == 1  # in its round's metrics
    assert not marker.exists()
    assert codes == [0, 0] and evil_code != 0
    log = coordinator.process.log.read_text()
    assert "Refused upload" in log and "builtins.exec" in log


def _kill_accepted_participant(coordinator: Coordinator, procs: list[RuntimeProcess]) -> RuntimeProcess:
    """After the first round, SIGKILL a participant that holds a seat (not a waiting spare)."""
    _wait_for(lambda: coordinator.status()["rounds_completed"] >= 1, 60, "first round")
    victim = next(p for p in procs if "Rendezvous accepted" in p.log.read_text())
    os.killpg(victim.pid, signal.SIGKILL)
    return victim


def test_killed_participant_degrades_the_session_which_finishes(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Three seats, min_participants 2: every seated provider is accepted (the third from the second round
    on); one killed mid-session, the session goes on with the two left (>= min) instead of stalling."""
    config = make_config(rounds=6, epochs=1, min_participants=2, heartbeat_timeout=2)
    with _session(config, channel, shards, tmp_path) as (coordinator, participants):
        victim = _kill_accepted_participant(coordinator, participants)
        status = wait_ended(coordinator, 90)
        codes = {p.name: p.wait(30) for p in participants}
    assert status["state"] == "FINISHED" and status["rounds_completed"] == 6
    assert codes.pop(victim.name) == -signal.SIGKILL
    assert list(codes.values()) == [0, 0]
    assert status["refused_calls"] == 0 and status["refused_uploads"] == 0
    assert [m["participants"] for m in status["rounds_metrics"]][-1] == 2
    assert "event='Degraded'" in coordinator.process.log.read_text()


def test_killed_participant_without_spare_fails_within_stall_time(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
) -> None:
    config = make_config(rounds=20, epochs=1, heartbeat_timeout=2, stall_timeout=4, linger=1)
    extra = ("--connect-timeout", "3")
    with _session(config, channel, shards, tmp_path, extra) as (coordinator, participants):
        victim = _kill_accepted_participant(coordinator, participants)
        killed_at = time.monotonic()
        status = wait_ended(coordinator, 60)
        elapsed = time.monotonic() - killed_at
        coordinator_code = coordinator.process.wait(30)
        codes = {p.name: p.wait(30) for p in participants if p is not victim}
    assert status["state"] == "FAILED" and status["rounds_completed"] < 20
    assert (
        "no progress for 4s" in status["reason"]
        and "2 participant(s) connected, 3 needed" in status["reason"]
    )
    # Detection (heartbeat 0.5 s + timeout 2 s) then the 4 s stall time, plus polling slack.
    assert elapsed < 0.5 + 2 + 4 + 3
    assert coordinator_code == 1
    # The survivors lose the coordinator and say so, with their own exit code.
    assert list(codes.values()) == [3, 3]
    assert all("coordinator unreachable" in p.tail() for p in participants if p is not victim)


def test_status_endpoints_and_sigterm(
    make_config: Callable[..., dict[str, Any]], channel: SessionChannel, tmp_path: Path
) -> None:
    coordinator = start_coordinator(make_config(), tmp_path, channel=channel)
    try:
        status = coordinator.status()
        assert status["state"] == "STANDBY" and status["participants"] == {"connected": 0, "selected": 0}
        assert status["rounds"] == 3 and status["rounds_metrics"] == [] and status["model"] is None
        assert status["refused_calls"] == 0 and status["refused_uploads"] == 0
        assert coordinator.status_url.startswith("https://") and coordinator.cert
        pinned, url = pinned_context(coordinator.cert), coordinator.status_url
        with urllib.request.urlopen(f"{url}/health", timeout=5, context=pinned) as response:
            assert json.loads(response.read()) == {"ok": True, "state": "STANDBY"}
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{coordinator.status_url}/nope", timeout=5, context=pinned)
        assert info.value.code == 404
        # Pinned: a reader expecting another certificate, or speaking plaintext, gets nothing.
        with pytest.raises(ssl.SSLError):
            fetch(url, 5, key_pair("impostor", 600).cert_pem)
        with pytest.raises(OSError):
            fetch(url.replace("https://", "http://"), 5)
        assert coordinator.status()["state"] == "STANDBY"  # and the endpoint still serves
        os.kill(coordinator.process.pid, signal.SIGTERM)
        assert coordinator.process.wait(10) == 143
        assert "Stop requested" in coordinator.process.tail()
        assert "Traceback" not in coordinator.process.log.read_text()
    finally:
        coordinator.process.stop()


def test_participant_exits_3_when_the_coordinator_is_unreachable(
    fl_python: Path, channel: SessionChannel, shards: dict[str, Any], tmp_path: Path
) -> None:
    from airflow_nevermined_fl.process import free_port

    write_files(tmp_path, {"coordinator.crt": channel.pair.cert_pem}, {"seat": channel.ticket(0)})
    started = time.monotonic()
    result = subprocess.run(
        [str(fl_python), "-m", "airflow_nevermined_fl.runtime.participant"]
        + ["--coordinator", f"127.0.0.1:{free_port()}", "--data", shards["providers"][0]["path"]]
        + ["--coordinator-cert", str(tmp_path / "coordinator.crt"), "--seat-file", str(tmp_path / "seat")]
        + ["--connect-timeout", "1"],
        capture_output=True,
        text=True,
        env=runtime_env({}),
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "coordinator unreachable for more than 1s" in result.stderr
    assert time.monotonic() - started < 30


def test_cli_session_local_uses_the_devstack_s3(seaweed: dict[str, Any], tmp_path: Path) -> None:
    """`nvfl session local --json` end to end, S3 found through a devstack state (own NVFL_HOME)."""
    home = tmp_path / "home"
    (home / "devstack").mkdir(parents=True)
    (home / "devstack" / "state.json").write_text(json.dumps({"s3": seaweed}))
    nvfl = Path(sys.executable).parent / "nvfl"
    env = {**os.environ, "NVFL_HOME": str(home)}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    argv = [
        str(nvfl),
        "session",
        "local",
        "--participants",
        "2",
        "--rounds",
        "2",
        "--scheme",
        "iid",
        "--json",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "FINISHED" and report["rounds_completed"] == 2
    assert report["final_accuracy"] > 0.8 and report["wall_time_s"] > 0
    assert set(report["exit_codes"].values()) == {0}
    assert seaweed["secret_key"] not in result.stdout + result.stderr
    # Without any S3: exit 2 and what to do.
    (home / "devstack" / "state.json").write_text("{}")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "run `nvfl devstack up` first" in result.stderr
