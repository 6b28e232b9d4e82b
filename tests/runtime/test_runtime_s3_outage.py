"""The session storage unreachable mid-session (a proxy in front of the real SeaweedFS goes down and comes
back): an outage of a few seconds is ridden out (the granted transfers are retried and the coordinator
does not count the wait against anyone's heartbeat); one longer than the stall time fails the session
with its reason, and every process ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stalled_servers import OutageProxy

from airflow_nevermined_fl import objectstore
from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.devtools.session_local import start_coordinator, start_participant, wait_ended
from airflow_nevermined_fl.runtime.config import StorageSpec


@pytest.fixture
def outage(seaweed: dict[str, Any]) -> Iterator[OutageProxy]:
    host, port = seaweed["endpoint"].removeprefix("http://").split(":")
    proxy = OutageProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.down()


@pytest.fixture
def storage(outage: OutageProxy, seaweed: dict[str, Any], prefix: str) -> StorageSpec:
    """The session's storage as the workloads reach it: through the proxy (grants are made for it)."""
    return StorageSpec(seaweed["bucket"], prefix, outage.url)


@pytest.fixture
def s3_client(outage: OutageProxy, seaweed: dict[str, Any]) -> Any:
    return objectstore.client(outage.url, "us-east-1", seaweed["access_key"], seaweed["secret_key"])


def _session_with_outage(
    config: dict[str, Any],
    channel: SessionChannel,
    shards: dict[str, Any],
    workdir: Path,
    outage: OutageProxy,
    seconds: float,
) -> tuple[dict[str, Any], list[int | None]]:
    coordinator = start_coordinator(config, workdir, channel=channel)
    procs = [coordinator.process]
    try:
        for i in range(3):
            path = shards["providers"][i]["path"]
            procs.append(
                start_participant(
                    f"p{i}", coordinator.grpc, path, channel.pair.cert_pem, channel.ticket(i), workdir
                )
            )
        deadline = time.monotonic() + 60
        while coordinator.status()["rounds_completed"] < 1:
            assert time.monotonic() < deadline, "no first round"
            time.sleep(0.05)
        outage.down()
        time.sleep(seconds)
        outage.up()
        status = wait_ended(coordinator, 120)
        # The participants of a finished session exit; those of a failed one are stopped (their gateway's
        # teardown does that), below.
        codes = [proc.wait(60) if status["state"] == "FINISHED" else None for proc in procs[1:]]
    finally:
        for proc in procs:
            proc.stop()
    assert all(proc.exit_code() is not None for proc in procs)  # nothing left running
    return status, codes


def test_a_short_storage_outage_is_ridden_out(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
    outage: OutageProxy,
) -> None:
    config = make_config(rounds=8, epochs=1, stall_timeout=30)
    status, codes = _session_with_outage(config, channel, shards, tmp_path, outage, seconds=3)
    assert status["state"] == "FINISHED" and status["rounds_completed"] == 8, status["reason"]
    assert [m["participants"] for m in status["rounds_metrics"]] == [3] * 8  # nobody dropped
    assert codes == [0, 0, 0]


def test_an_outage_longer_than_the_stall_time_fails_the_session(
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    tmp_path: Path,
    outage: OutageProxy,
) -> None:
    config = make_config(rounds=50, epochs=1, stall_timeout=8, linger=30)  # its end stays readable
    status, codes = _session_with_outage(config, channel, shards, tmp_path, outage, seconds=12)
    assert status["state"] == "FAILED", status
    assert "no progress for 8s" in status["reason"]
    assert status["model"] is None
