"""A ``docker-compose.yaml`` project driven from Python (the compose test and the compose benchmark): its
``.env`` written by :func:`~airflow_nevermined_fl.devtools.compose.env` (free ports), ``docker-compose up``,
the wait until every service is healthy, the session conf on its gateways, balances on its chain, and
``down -v``. Uses the ``docker-compose`` command on PATH and the engine at ``$DOCKER_HOST``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from airflow_nevermined_fl.devtools import compose
from airflow_nevermined_fl.paths import PROJECT_DIR

if TYPE_CHECKING:
    from docker import APIClient

    from airflow_nevermined_fl.client import AirflowClient

COMPOSE_FILE = PROJECT_DIR / "docker-compose.yaml"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
INIT = "airflow-init"


class ComposeError(RuntimeError):
    """A compose command failed, or the stack did not become healthy."""


def docker_socket() -> str:
    """The engine's socket path on this host (``$DOCKER_HOST``, default the local socket)."""
    return (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")


class ComposeStack:
    """One compose project of ``docker-compose.yaml`` with a fresh ``.env`` in ``home``."""

    def __init__(self, engine: APIClient, home: Path) -> None:
        self.engine = engine
        self.project = f"nvfl-{secrets.token_hex(3)}"
        self.env_file = home / ".env"
        self.values = compose.env(docker_socket(), compose.free_ports())
        compose.write_env(self.env_file, self.values)
        self.deployment_file = home / "deployment.json"

    def compose(self, *args: str, timeout: float = 600) -> str:
        """``docker-compose ARGS`` on the project. Compose prefers the caller's environment to ``.env``:
        the variables ``.env`` sets are left out of it (a caller's ``AIRFLOW_CONN_*`` would win)."""
        binary = shutil.which("docker-compose")
        if not binary:
            raise ComposeError("no docker-compose on PATH (Debian: apt-get install docker-compose)")
        argv = [binary, "-p", self.project, "-f", str(COMPOSE_FILE), "--project-directory", str(PROJECT_DIR)]
        environ = {key: value for key, value in os.environ.items() if key not in self.values}
        result = subprocess.run(
            [*argv, "--env-file", str(self.env_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environ,
        )
        if result.returncode:
            raise ComposeError(f"docker-compose {' '.join(args)}:\n{result.stderr[-3000:]}")
        return result.stdout

    def containers(self) -> list[dict[str, Any]]:
        return self.engine.containers(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})

    def leftovers(self) -> dict[str, int]:
        """Containers, networks and volumes of the project still there."""
        label = {"label": f"{PROJECT_LABEL}={self.project}"}
        return {
            "containers": len(self.containers()),
            "networks": len(self.engine.networks(filters=label)),
            "volumes": len(self.engine.volumes(filters=label)["Volumes"] or []),
        }

    def up(self, timeout: float = 900) -> None:
        """``up -d``, then until airflow-init exited 0 and every other service is healthy."""
        self.compose("up", "-d")
        services = set(yaml.safe_load(COMPOSE_FILE.read_text())["services"]) - {INIT}
        deadline = time.monotonic() + timeout
        while True:
            states = self._states()
            init = states.pop(INIT, "missing")
            if set(states) == services and set(states.values()) == {"healthy"} and init == "exited 0":
                break
            if time.monotonic() > deadline or (init.startswith("exited") and init != "exited 0"):
                states[INIT] = init
                raise ComposeError(f"not healthy after {timeout:.0f}s: {states}\n{self._tails()}")
            time.sleep(3)
        exec_id = self.engine.exec_create(self._container("devchain"), ["cat", compose.DEPLOYMENT_FILE])
        self.deployment_file.write_bytes(self.engine.exec_start(exec_id))

    def _states(self) -> dict[str, str]:
        states = {}
        for c in self.containers():
            state = self.engine.inspect_container(c["Id"])["State"]
            health = (state.get("Health") or {}).get("Status")
            states[c["Labels"][SERVICE_LABEL]] = health or f"{state['Status']} {state['ExitCode']}"
        return states

    def _container(self, service: str) -> str:
        (found,) = [c["Id"] for c in self.containers() if c["Labels"][SERVICE_LABEL] == service]
        return found

    def _tails(self, lines: int = 15) -> str:
        """The last log lines of every service not healthy (what a failed ``up`` reports)."""
        tails = []
        for service, state in self._states().items():
            if state not in ("healthy", "exited 0"):
                log = self.engine.logs(self._container(service), tail=lines).decode(errors="replace")
                tails.append(f"--- {service} ({state}):\n{log}")
        return "\n".join(tails)

    def down(self) -> None:
        """``down -v --remove-orphans``: every container, network and volume of the project."""
        self.compose("down", "-v", "--remove-orphans")

    @cached_property
    def client(self) -> AirflowClient:
        from airflow_nevermined_fl.client import AirflowClient

        url = f"http://127.0.0.1:{self.values['AIRFLOW_PORT']}"
        return AirflowClient(url, "admin", self.values["AIRFLOW_ADMIN_PASSWORD"])

    @property
    def chain_state(self) -> dict[str, Any]:
        """What :mod:`~airflow_nevermined_fl.devtools.demo`'s chain readers take."""
        rpc_url = f"http://127.0.0.1:{self.values['NVFL_CHAIN_PORT']}"
        return {"rpc_url": rpc_url, "deployment_file": str(self.deployment_file)}

    def offers(self) -> dict[str, dict[str, Any]]:
        """Each gateway's offer (``GET /api/v1/info``) and its provider's address, by provider name."""
        from airflow_nevermined_fl.devtools.devstack import chain, gateways

        first = json.loads(self.values[compose.gateway_variable("coordinator", "CONFIG")])["listen"]["port"]
        offers = {}
        for i, p in enumerate(gateways.PROVIDERS):
            info = httpx.get(f"http://127.0.0.1:{first + i}/api/v1/info", timeout=10).json()
            (service,) = info["services"]
            offers[p.name] = service | {"address": chain.account(p.account).address}
        return offers

    def providers(self) -> dict[str, Any]:
        """A session conf's ``coordinator`` and ``data_providers``, by their assets' DIDs."""
        from airflow_nevermined_fl.devtools.devstack.gateways import session_providers

        return session_providers({"gateways": self.offers()})

    def balances(self) -> dict[str, int]:
        """Token balances in base units: the consumer and each provider by name."""
        from airflow_nevermined_fl.devtools.demo import token_balances
        from airflow_nevermined_fl.devtools.devstack import chain

        names = {"consumer": chain.accounts()["consumer"]}
        names |= {name: offer["address"] for name, offer in self.offers().items()}
        return token_balances(self.chain_state, names)
