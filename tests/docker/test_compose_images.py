"""The images docker-compose.yaml runs, built offline (``nvfl images build --all``) and started for real:
the Airflow image loads this provider and parses the DAGs; the devchain image serves anvil with the
Nevermined contracts deployed."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_nevermined_fl import process
from airflow_nevermined_fl.contracts import CONTRACTS
from airflow_nevermined_fl.devtools import images

PROBE = """
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.providers_manager import ProvidersManager
bag = DagBag("/opt/nvfl/dags")
print("PROBE " + json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors,
      "provider": "airflow-nevermined-fl" in ProvidersManager().providers}))
"""


@pytest.fixture(scope="module")
def compose_images(engine: Any) -> dict[str, str]:
    return images.build_all(engine, compose=True)


@pytest.fixture
def run_container(engine: Any) -> Iterator[Any]:
    """Create + start a host-network container; every one started is removed afterwards."""
    started: list[str] = []

    def run(image: str, command: Any = None, env: Any = None, **host: Any) -> str:
        config = engine.create_host_config(network_mode="host", **host)
        container = engine.create_container(image, command=command, environment=env, host_config=config)
        started.append(container["Id"])
        engine.start(container["Id"])
        return container["Id"]

    yield run
    for container in started:
        engine.remove_container(container, force=True)


def test_airflow_image_loads_the_provider_and_parses_the_dags(
    compose_images: dict[str, str], run_container: Any, engine: Any
) -> None:
    """``fl_retraining`` exists only where ``NVFL_SESSION_PROVIDERS`` names its default providers."""

    def probe(env: dict[str, str] | None) -> dict[str, Any]:
        container = run_container(compose_images["airflow_image"], ["python", "-c", PROBE], env=env)
        assert engine.wait(container, timeout=120)["StatusCode"] == 0, engine.logs(container).decode()[-3000:]
        lines = [x for x in engine.logs(container).decode().splitlines() if x.startswith("PROBE ")]
        return json.loads(lines[-1].removeprefix("PROBE "))

    providers = {
        "coordinator": {"did": "did:nv:" + "1" * 64},
        "data_providers": [{"did": "did:nv:" + "2" * 64}],
    }
    assert probe(None) == {"dags": ["fl_model_evaluation", "fl_session"], "errors": {}, "provider": True}
    with_providers = probe({"NVFL_SESSION_PROVIDERS": json.dumps(providers)})
    assert with_providers == {
        "dags": ["fl_model_evaluation", "fl_retraining", "fl_session"],
        "errors": {},
        "provider": True,
    }


def _rpc(port: int, method: str, *params: str) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local anvil
        return json.loads(response.read())["result"]


def test_devchain_image_deploys_the_contracts(
    compose_images: dict[str, str], run_container: Any, engine: Any, tmp_path: Path
) -> None:
    port = process.free_port()
    env = {"NVFL_CHAIN_PORT": str(port)}
    container = run_container(compose_images["devchain_image"], env=env, binds=[f"{tmp_path}:/nvfl"])
    deployment = tmp_path / "chain" / "deployment.json"
    deadline = time.monotonic() + 120
    while not (deployment.exists() and deployment.stat().st_size) and time.monotonic() < deadline:
        assert engine.inspect_container(container)["State"]["Running"], engine.logs(container).decode()
        time.sleep(0.2)
    assert deployment.exists(), engine.logs(container).decode()[-3000:]
    assert int(_rpc(port, "eth_chainId"), 16) == 31337
    contracts = json.loads(deployment.read_text())["contracts"]
    assert set(CONTRACTS) <= set(contracts)
    for name in CONTRACTS:
        assert len(_rpc(port, "eth_getCode", contracts[name]["address"], "latest")) > 2, name
