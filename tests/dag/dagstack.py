"""The DAG tests' view of the real embedded stack: run the session DAG with ``dag.test()`` in a fresh
process against the providers' gateways, read chain balances, list the secrets that must never leak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.gateway.launchers import Workload
from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher
from airflow_nevermined_fl.paths import PROJECT_DIR
from airflow_nevermined_fl.runtime import status as coordinator_status
from airflow_nevermined_fl.runtime.config import ChannelSpec

if TYPE_CHECKING:
    from stalled_servers import RpcProxy

    from airflow_nevermined_fl.client import AirflowClient

RUNNER = Path(__file__).with_name("dagtest_runner.py")
PROXIED_CONN_ID = "nevermined_consumer_proxied"
"""The consumer's account, its RPC through :attr:`Api.rpc` (a conf's ``consumer_conn_id``)."""
SUMMARY_PREFIX = "DAGTEST_SUMMARY "


@dataclass
class Stack:
    """``gateways``: per provider name its gateway's public fields (url, did, address, price, type).
    ``conn_env``: the consumer's Airflow connections (consumer account + storage), nothing of a provider."""

    home: Path
    chain: dict[str, Any]
    s3: dict[str, Any]
    gateways: dict[str, dict[str, Any]]
    conn_env: dict[str, str] = field(repr=False)
    airflow_home: Path
    extra_gateways: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    gateways_state: dict[str, Any] = field(default_factory=dict, repr=False)

    def restart_gateway(self, name: str) -> None:
        """Stop the stack's gateway ``name`` and serve it again (same config, port, state)."""
        from airflow_nevermined_fl.devtools.devstack import gateways

        gateways.restart(self.gateways_state["gateways"][name])

    def secrets(self) -> list[str]:
        """Every secret the stack handed out: account keys (both spellings) and the S3 keys."""
        from airflow_nevermined_fl.devtools.devstack import chain, s3

        keys = [chain.account(i).key.hex().removeprefix("0x") for i in range(6)]
        creds = s3.env(self.s3)
        return keys + ["0x" + k for k in keys] + [creds["AWS_SECRET_ACCESS_KEY"], creds["AWS_ACCESS_KEY_ID"]]

    def w3(self) -> Any:
        from airflow_nevermined_fl.contracts.client import connect

        return connect(self.chain["rpc_url"])

    def accounts(self) -> dict[str, str]:
        """Addresses: the consumer and each provider by its gateway's name."""
        from airflow_nevermined_fl.devtools.devstack import chain

        providers = {name: gateway["address"] for name, gateway in self.gateways.items()}
        return {"consumer": chain.accounts()["consumer"]} | providers

    def balances(self) -> dict[str, int]:
        """Token balances in base units (compare differences with :meth:`base`)."""
        from airflow_nevermined_fl.devtools.demo import token_balances

        return token_balances(self.chain, self.accounts())

    def base(self, tokens: str | int) -> int:
        """``tokens`` (a price, a sum of prices) in base units, by the chain token's ``decimals()``."""
        from airflow_nevermined_fl.devtools.demo import token_units

        return token_units(self.chain).base(tokens)

    def start_gateways(
        self,
        backend: str,
        suffix: str,
        connection: dict[str, Any] | None = None,
        rpc_url: str | None = None,
        s3_endpoint: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Four more gateways, same provider accounts, named ``<name><suffix>`` (other DIDs), on ``backend``
        (``docker``: workloads on ``$DOCKER_HOST``; ``kubernetes``: the cluster of ``connection``), their
        storage ``self.s3``, reaching the chain at ``rpc_url`` and the storage at ``s3_endpoint`` when given
        (e.g. through proxies); their public fields. Stopped with the stack."""
        from airflow_nevermined_fl.devtools.devstack import gateways

        previous = self.extra_gateways.get(suffix)
        chain = self.chain | ({"rpc_url": rpc_url} if rpc_url else {})
        s3 = self.s3 | ({"endpoint": s3_endpoint} if s3_endpoint else {})
        state = gateways.start(self.home, chain, s3, backend, suffix, previous, connection)
        self.extra_gateways[suffix] = state
        return gateways.public(state)["gateways"]

    def providers(self, gateways: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """A conf's ``coordinator`` and ``data_providers`` (by DID) of ``gateways`` (default: the stack's)."""
        from airflow_nevermined_fl.devtools.devstack.gateways import session_providers

        return session_providers({"gateways": gateways or self.gateways})

    def conf(self, **overrides: Any) -> dict[str, Any]:
        """A session conf on the stack's gateways: 2 rounds, short time-outs; ``overrides`` win."""
        return {"rounds": 2, "stall_timeout": 60, "session_timeout": 600, **self.providers(), **overrides}

    def airflow_env(self) -> dict[str, str]:
        from airflow_nevermined_fl.devtools.devstack.gateways import SESSION_PROVIDERS_ENV

        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        return {
            **inherited,  # the consumer's Airflow has its own connections only
            **self.conn_env,
            SESSION_PROVIDERS_ENV: json.dumps(self.providers()),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
        }

    def start_dag_test(
        self, conf: dict[str, Any], summary: Path, *retry: str, dag_id: str = "fl_session"
    ) -> subprocess.Popen[str]:
        argv = [sys.executable, str(RUNNER), dag_id, json.dumps(conf), "--summary", str(summary)]
        if retry:
            argv += ["--retry", *retry]
        return subprocess.Popen(
            argv, env=self.airflow_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def dag_test(
        self, conf: dict[str, Any], summary: Path, *retry: str, dag_id: str = "fl_session"
    ) -> tuple[dict[str, Any], str]:
        """Run one session with dag.test(); the full summary (XComs, rendered fields) and the output."""
        proc = self.start_dag_test(conf, summary, *retry, dag_id=dag_id)
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, output[-5000:]
        assert any(line.startswith(SUMMARY_PREFIX) for line in output.splitlines()), output[-5000:]
        return json.loads(summary.read_text()), output


@dataclass
class Api:
    """A running Airflow (component state), its REST client, the connections it was started with and the
    proxy in front of the chain that :data:`PROXIED_CONN_ID` goes through."""

    state: dict[str, Any]
    client: AirflowClient
    conn_env: dict[str, str] = field(repr=False)
    rpc: RpcProxy

    def token(self) -> str:
        """The Airflow admin's JWT (the client's, from ``POST /auth/token``)."""
        return self.client.token


def payments(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A 3-provider run's payments (XCom): the coordinator's, then each data provider's."""
    xcom = summary["xcom"]
    return [xcom["lock_coordinator_payment"]["return_value"]] + [
        xcom[f"lock_payment[{i}]"]["return_value"] for i in range(3)
    ]


def run_with_fault(
    stack: Stack, conf: dict[str, Any], tmp_path: Path, fault: Callable[[float], float]
) -> tuple[dict[str, Any], str, float]:
    """Run a session with ``dag.test()``, calling ``fault(started)`` while it runs; the summary, the task
    logs (also kept as ``output.log``) and when the fault began (``fault``'s return, epoch seconds)."""
    started = time.time()
    proc = stack.start_dag_test(conf, tmp_path / "summary.json")
    try:
        began = fault(started)
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    (tmp_path / "output.log").write_text(output)  # the run's task logs, for a failure's diagnosis
    return json.loads((tmp_path / "summary.json").read_text()), output, began


def seconds_to(output: str, marker: str, since: float) -> float:
    """Seconds from ``since`` (epoch) to the first task log line holding ``marker``."""
    line = next(line for line in output.splitlines() if marker in line)
    return datetime.fromisoformat(line.split()[0]).timestamp() - since


def assert_failed_and_refunded(stack: Stack, summary: dict[str, Any], before: dict[str, int]) -> None:
    """The session failed in ``wait_for_rounds``; the teardown stopped every workload (no process left)
    and refunded every payment by itself: the consumer is back to its start, nobody was paid."""
    assert summary["state"] == "failed"
    assert summary["tasks"]["wait_for_rounds"] == "failed"
    assert summary["tasks"]["publish_model"] == "upstream_failed"
    assert summary["tasks"]["teardown"] == "success"
    teardown, paid = summary["xcom"]["teardown"]["return_value"], payments(summary)
    assert teardown["session_completed"] is False
    assert set(teardown["refunds"]) == {p["name"] for p in paid}
    assert all(r["outcome"] == "refunded" and r["tx_hash"] for r in teardown["refunds"].values())
    assert stack.balances() == before
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in paid})
    assert len(workloads) == 4 and all(process_gone(int(w.details["pid"])) for _, w in workloads)


def stopped(summary: dict[str, Any]) -> set[str]:
    """Names of the providers whose workloads the teardown stopped through their gateways."""
    return {w["name"] for w in summary["xcom"]["teardown"]["return_value"]["stopped"]}


def assert_no_secrets(stack: Stack, *texts: str) -> None:
    for secret in stack.secrets():
        for i, text in enumerate(texts):
            assert secret not in text, f"a secret leaked into text #{i}"


def process_gone(pid: int, wait: float = 5.0) -> bool:
    """The process ended (a zombie awaiting its parent counts as ended)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def coordinator_at_round(
    stack: Stack, started_after: float, round_: int, timeout: float, gateway: str = "coordinator"
) -> Workload:
    """The coordinator workload (of the gateway named ``gateway``) started after ``started_after`` once its
    status reports ``round_``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pattern = f"{gateway}/state/workloads/*/coordinator-*/workload.json"
        for record in (stack.home / "gateways").glob(pattern):
            workload = Workload.from_dict(json.loads(record.read_text()))
            if workload.started < started_after:
                continue
            try:  # over TLS, pinned to the session certificate the gateway wrote next to the record
                cert = (record.parent / ChannelSpec.tls_cert).read_text()
                status = coordinator_status.fetch(f"https://{workload.endpoints['status']}", 1, cert)
            except (OSError, ValueError):
                continue
            if status["round"] >= round_:
                return workload
        time.sleep(0.3)
    raise TimeoutError(f"no coordinator reached round {round_} within {timeout}s")


def runtime_pid(pid: int) -> int:
    """The FL runtime process (coordinator or participant) of a local workload: the last of the line of
    single children under ``pid`` (its exit-code shell, then the policy's wall-time ``timeout``)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    if not children:
        return pid
    (only,) = children
    return runtime_pid(only)


def gateway_workloads(stack: Stack, agreement_ids: set[str]) -> list[tuple[LocalLauncher, Workload]]:
    """The workloads the stack's gateways started for these agreements (their launcher, the workload)."""
    found = []
    for record in (stack.home / "gateways").glob("*/state/workloads/*/*/workload.json"):
        workload = Workload.from_dict(json.loads(record.read_text()))
        if workload.labels.run_id in agreement_ids:
            found.append((LocalLauncher(root=record.parents[2]), workload))
    return found


def dataset_locations(stack: Stack) -> list[str]:
    """Where the providers' data is (their gateways' configs): never on the consumer's side."""
    configs = [json.loads(p.read_text()) for p in (stack.home / "gateways").glob("*/gateway.json")]
    return [s["dataset"] for c in configs for s in c["services"] if s.get("dataset")]
