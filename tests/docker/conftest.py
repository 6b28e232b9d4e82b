"""Docker fixtures: a reachable engine (else skip), the images (cached by content hash), data shards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from docker_engine import engine_or_skip, engine_url

from airflow_nevermined_fl import runtime_env
from airflow_nevermined_fl.devtools import data, images
from airflow_nevermined_fl.devtools.bare import BareSession
from airflow_nevermined_fl.devtools.devstack import s3
from airflow_nevermined_fl.gateway.launchers.docker import LABEL, DockerLauncher, connection_json
from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher

DOCKER_CONN_ID = "nvfl_docker_test"


@pytest.fixture(scope="session")
def engine() -> Any:
    """A client of the engine at $DOCKER_HOST; skips every Docker test when none answers."""
    return engine_or_skip()


@pytest.fixture(scope="session")
def runtime_image(engine: Any) -> str:
    """Base (debootstrap) + runtime image; a rerun with unchanged inputs reuses them."""
    return images.build_all(engine)["runtime_image"]


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Digits in 2 IID shards, in a directory the containers' user may read (mounted read-only)."""
    out = tmp_path_factory.mktemp("docker-shards")
    manifest = data.partition(out, 2, "iid", 0.5, 0.2, 0)
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return manifest | {"dir": str(out)}


@pytest.fixture(scope="session")
def docker_conn(shards: dict[str, Any]) -> Iterator[str]:
    """The provider's Docker connection (engine URL, the data dir mounted at the same path)."""
    key = f"AIRFLOW_CONN_{DOCKER_CONN_ID.upper()}"
    os.environ[key] = connection_json(docker_url=engine_url(), mounts=[f"{shards['dir']}:{shards['dir']}:ro"])
    yield DOCKER_CONN_ID
    os.environ.pop(key, None)


@pytest.fixture
def docker_launcher(runtime_image: str, docker_conn: str) -> DockerLauncher:
    return DockerLauncher(docker_conn)


@pytest.fixture(scope="session")
def local_launcher() -> LocalLauncher:
    runtime_env.install()
    return LocalLauncher()


@pytest.fixture
def bare_session(
    seaweed: dict[str, Any], shards: dict[str, Any], runtime_image: str
) -> Callable[..., BareSession]:
    """A 2-participant digits session factory under a fresh run id and S3 prefix."""

    def make(coordinator: Any, participants: Any, **overrides: Any) -> BareSession:
        run_id = f"t-{uuid.uuid4().hex[:10]}"
        session = BareSession.on_devstack_s3(
            seaweed,
            f"t/{run_id}",
            coordinator_launcher=coordinator,
            participant_launcher=participants,
            shards=[p["path"] for p in shards["providers"]],
            run_id=run_id,
            model=data.softmax_model(shards),
            image=runtime_image,
        )
        for key, value in overrides.items():
            setattr(session, key, value)
        return session

    return make


@pytest.fixture
def labelled(engine: Any) -> Callable[[str], list[dict[str, Any]]]:
    """Containers (any state) carrying the given run id label."""

    def find(run_id: str) -> list[dict[str, Any]]:
        return engine.containers(all=True, filters={"label": [f"{LABEL}.run_id={run_id}"]})

    return find


@pytest.fixture(scope="session")
def seaweed_secrets(seaweed: dict[str, Any]) -> list[str]:
    """The S3 keys: must never show up in workload records, labels or logs."""
    return list(s3.credentials(seaweed).values())
