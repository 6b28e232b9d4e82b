"""The Docker launcher with a real engine: a real coordinator and participants in containers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_nevermined_fl.gateway.launchers import get_launcher
from airflow_nevermined_fl.gateway.launchers.base import Labels, WorkloadSpec
from airflow_nevermined_fl.gateway.launchers.docker import (
    LABEL,
    WORKDIR,
    DockerConfigError,
    DockerLauncher,
    DockerTarget,
    container_name,
)


def test_session_in_containers(
    docker_launcher: DockerLauncher,
    bare_session: Callable[..., Any],
    labelled: Callable[[str], list[dict[str, Any]]],
    engine: Any,
    seaweed_secrets: list[str],
) -> None:
    session = bare_session(docker_launcher, docker_launcher)
    try:
        coordinator = session.start_coordinator()
        session.wait_healthy(coordinator)
        participants = session.start_participants(coordinator)

        # Labelled, named after run + workload, found again by labels; start is idempotent per labels.
        found = docker_launcher.find(session.dag_id, session.run_id)
        assert sorted(w.labels.name for w in found) == ["coordinator", "p0", "p1"]
        info = engine.inspect_container(coordinator.id)
        tags = info["Config"]["Labels"]
        assert {tags[f"{LABEL}.{k}"] for k in ("dag_id", "run_id", "task_id", "role")} == {
            session.dag_id,
            session.run_id,
            "start_coordinator",
            "coordinator",
        }
        assert info["Name"] == "/" + container_name(coordinator.labels)
        assert info["HostConfig"]["NetworkMode"] == "host"
        assert info["Config"]["Image"] == session.image
        assert session.start_coordinator().id == coordinator.id
        assert coordinator.endpoints["grpc"].startswith("127.0.0.1:")

        status = session.wait_ended(coordinator)
        assert status["state"] == "FINISHED", status
        assert status["rounds_completed"] == session.rounds
        assert all(m["accuracy"] is not None for m in status["rounds_metrics"])

        # Participants exit 0 after FINISHED; their logs come from the container.
        for participant in participants:
            for _ in range(100):
                if not docker_launcher.status(participant).running:
                    break
                engine.wait(participant.id, timeout=30)
            assert docker_launcher.status(participant).exit_code == 0
        log = docker_launcher.logs(participants[0], 200)
        assert "Session finished" in log

        # No secret in what travels (XCom), in labels, or in the logs.
        public = json.dumps([w.to_dict() for w in found]) + json.dumps(tags) + log
        public += docker_launcher.logs(coordinator, 1000)
        assert not [s for s in seaweed_secrets if s in public]
    finally:
        stopped = session.stop_all()

    assert sorted(w.labels.name for w in stopped) == ["coordinator", "p0", "p1"]
    assert labelled(session.run_id) == []
    assert docker_launcher.find(session.dag_id, session.run_id) == []
    # Stopped and removed: the exit code and the log tail were kept for the teardown's report.
    by_name = {w.labels.name: w for w in stopped}
    assert docker_launcher.status(by_name["p0"]).exit_code == 0
    assert "Session finished" in docker_launcher.logs(by_name["p0"], 50)
    assert docker_launcher.status(by_name["coordinator"]).running is False


def test_mixed_session_coordinator_in_container_participants_local(
    docker_launcher: DockerLauncher,
    local_launcher: Any,
    bare_session: Callable[..., Any],
    labelled: Callable[[str], list[dict[str, Any]]],
) -> None:
    session = bare_session(docker_launcher, local_launcher)
    report = session.run()
    assert report["state"] == "FINISHED", report
    assert report["rounds_completed"] == session.rounds
    assert report["stopped"] == ["coordinator", "p0", "p1"]
    assert labelled(session.run_id) == []
    leftovers = local_launcher.find(session.dag_id, session.run_id)
    assert [w.labels.name for w in leftovers if local_launcher.status(w).running] == []


def test_injected_failure_leaves_no_container(
    docker_launcher: DockerLauncher,
    bare_session: Callable[..., Any],
    labelled: Callable[[str], list[dict[str, Any]]],
    engine: Any,
) -> None:
    """A participant fails on bad input, the coordinator is killed: teardown still removes everything."""
    session = bare_session(docker_launcher, docker_launcher, participant_args={"p1": ["--batch-size", "0"]})
    try:
        coordinator = session.start_coordinator()
        session.wait_healthy(coordinator)
        p0, p1 = session.start_participants(coordinator)
        assert engine.wait(p1.id, timeout=60)["StatusCode"] == 2
        assert "--batch-size" in docker_launcher.logs(p1)
        engine.kill(coordinator.id)
        engine.wait(coordinator.id, timeout=30)
        assert docker_launcher.status(coordinator).exit_code == 137
        assert docker_launcher.status(p0).running  # waits for a coordinator that is gone
        assert len(labelled(session.run_id)) == 3
    finally:
        stopped = session.stop_all()
    assert len(stopped) == 3
    assert labelled(session.run_id) == []
    assert {w.labels.name: w.details["exit_code"] for w in stopped if w.labels.name != "p0"} == {
        "coordinator": 137,
        "p1": 2,
    }


def test_missing_image_is_a_clear_error_and_starts_nothing(
    docker_launcher: DockerLauncher, labelled: Callable[[str], list[dict[str, Any]]]
) -> None:
    labels = Labels("nvfl_missing_image", "run-missing-image", "start_coordinator", "coordinator", "c")
    spec = WorkloadSpec(labels=labels, module="x", args=[], image="airflow-nevermined-fl-absent:0")
    with pytest.raises(DockerConfigError, match="image: 'airflow-nevermined-fl-absent:0' is not on"):
        docker_launcher.start(spec)
    assert labelled("run-missing-image") == []


def test_registered_backend_with_bind_host(docker_conn: str) -> None:
    launcher = get_launcher("docker", docker_conn)
    assert isinstance(launcher, DockerLauncher)
    assert launcher.bind_host == "127.0.0.1"  # advertised host is loopback: do not listen on all interfaces
    assert WORKDIR.startswith("/")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"docker_url": "ftp://x"}, r"c\.extra\.docker_url: expected unix:// tcp:// https://"),
        ({"mounts": "/a:/b"}, r"c\.extra\.mounts: expected a list"),
        ({"mounts": ["data:/b"]}, r"c\.extra\.mounts: expected absolute SRC:DST\[:ro\]: 'data:/b'"),
        ({"mounts": ["/a:/b:rx"]}, r"c\.extra\.mounts: expected absolute SRC:DST\[:ro\]: '/a:/b:rx'"),
        ({"advertised_host": 5}, r"c\.extra\.advertised_host: expected a str"),
        ({"tls_ca_cert": "/ca.pem"}, r"c\.extra: give all tls_ca_cert tls_client_cert tls_client_key"),
    ],
)
def test_bad_connection_settings_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(DockerConfigError, match=message):
        DockerTarget.from_extra(extra, "c")


def test_advertised_host_defaults_and_bind_host() -> None:
    remote = DockerTarget.from_extra({"docker_url": "tcp://10.1.2.3:2376"}, "c")
    assert remote.advertised_host == "10.1.2.3"
    assert DockerTarget.from_extra({"docker_url": "unix:///s.sock"}, "c").advertised_host == "127.0.0.1"
    launcher = DockerLauncher()
    launcher.__dict__["target"] = remote
    assert launcher.bind_host == "0.0.0.0"
