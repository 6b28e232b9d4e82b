"""The DAG tests' view of the real embedded stack: run the session DAG with ``dag.test()`` in a fresh
process, read chain balances, list the secrets that must never leak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_nevermined_fl.paths import PROJECT_DIR

RUNNER = Path(__file__).with_name("dagtest_runner.py")
SUMMARY_PREFIX = "DAGTEST_SUMMARY "


@dataclass
class Stack:
    home: Path
    chain: dict[str, Any]
    s3: dict[str, Any]
    manifest: dict[str, Any]
    conn_env: dict[str, str] = field(repr=False)
    airflow_home: Path

    def secrets(self) -> list[str]:
        """Every secret the stack handed out: account keys (both spellings) and the S3 keys."""
        from airflow_nevermined_fl.devstack import chain, s3

        keys = [chain.account(i).key.hex().removeprefix("0x") for i in range(6)]
        creds = s3.env(self.s3)
        return keys + ["0x" + k for k in keys] + [creds["AWS_SECRET_ACCESS_KEY"], creds["AWS_ACCESS_KEY_ID"]]

    def w3(self) -> Any:
        from airflow_nevermined_fl.contracts.client import connect

        return connect(self.chain["rpc_url"])

    def accounts(self) -> dict[str, str]:
        from airflow_nevermined_fl.devstack import chain

        acc = chain.public(self.chain)["accounts"]
        names = {"consumer": acc["consumer"], "coordinator": acc["coordinator_provider"]}
        return names | {f"provider-{i}": a for i, a in enumerate(acc["data_providers"], start=1)}

    def balances(self) -> dict[str, int]:
        from airflow_nevermined_fl.demo import token_balances

        return token_balances(self.chain, self.accounts())

    def conf(self, **overrides: Any) -> dict[str, Any]:
        from airflow_nevermined_fl.demo import demo_conf

        conf = demo_conf(self.manifest, rounds=2)
        conf.update(stall_timeout=60, session_timeout=600)
        conf.update(overrides)
        return conf

    def airflow_env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.conn_env,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
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
