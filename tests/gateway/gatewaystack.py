"""The gateway tests' actors: provider gateways as separate ``nvfl gateway serve`` processes (own key file,
config and state dir), and the consumer (its keeper, its workflow DDOs in SeaweedFS, its signed client)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from airflow_nevermined_fl import ddo, process
from airflow_nevermined_fl.contracts.deployment import load_deployment
from airflow_nevermined_fl.contracts.keeper import HOOK_CONTRACTS, Keeper, KeeperSettings
from airflow_nevermined_fl.devtools.devstack import chain, s3
from airflow_nevermined_fl.gateway.launchers import Workload
from airflow_nevermined_fl.gateway.launchers.base import run_key
from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher
from airflow_nevermined_fl.protocol import auth
from airflow_nevermined_fl.protocol.client import GatewayClient

NVFL = Path(sys.executable).parent / "nvfl"


def write_secret(path: Path, text: str) -> Path:
    """A file only its owner may read (what the gateway's config demands of key and credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def nvfl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NVFL), *args], capture_output=True, text=True, timeout=120)


def gateway_config(
    directory: Path,
    name: str,
    account: int,
    chain_state: dict[str, Any],
    s3_state: dict[str, Any],
    services: list[dict[str, Any]],
    listen: dict[str, Any],
    max_executions: int = 4,
    backend: dict[str, Any] | None = None,
) -> Path:
    """Write a gateway's key file, storage credentials and config under ``directory``; the config's path."""
    creds = {"access_key": s3_state["access_key"], "secret_key": s3_state["secret_key"]}
    config = {
        "name": name,
        "key_file": str(write_secret(directory / "provider.key", chain.account(account).key.hex())),
        "chain": {
            "rpc_url": chain_state["rpc_url"],
            "deployment_file": chain_state["deployment_file"],
            "chain_id": chain_state["chain_id"],
            "block_time": chain_state["block_time"],
        },
        "listen": listen,
        "state_dir": str(directory / "state"),
        "backend": backend or {"type": "local"},
        "storage": {
            "endpoint_url": s3_state["endpoint"],
            "bucket": s3_state["bucket"],
            "credentials_file": str(write_secret(directory / "s3.json", json.dumps(creds))),
        },
        "services": services,
        "max_executions": max_executions,
        "auth_max_age": 60,
    }
    path = directory / "gateway.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class Gateway:
    """A running gateway process and where its state is."""

    name: str
    address: str
    endpoint: str
    directory: Path
    pid: int
    assets: list[dict[str, Any]]
    ca_file: str | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / "gateway.json"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    def asset(self, name: str) -> dict[str, Any]:
        return next(a for a in self.assets if a["name"] == name)

    def log(self) -> str:
        return (self.directory / "gateway.log").read_text(errors="replace")

    def workload_dirs(self, agreement_id: str) -> list[Path]:
        base = self.state_dir / "workloads" / run_key(f"gw-{self.name}", agreement_id)
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def recorded(self, agreement_id: str) -> bool:
        return (self.state_dir / "executions" / f"{agreement_id}.json").exists()

    def nothing_launched(self, agreement_id: str) -> bool:
        """No execution record and no workload directory for the agreement."""
        return not self.recorded(agreement_id) and not self.workload_dirs(agreement_id)


def start_gateway(
    directory: Path,
    name: str,
    account: int,
    chain_state: dict[str, Any],
    s3_state: dict[str, Any],
    services: list[dict[str, Any]],
    tls: tuple[Path, Path] | None = None,
    max_executions: int = 4,
    backend: dict[str, Any] | None = None,
) -> Gateway:
    """Publish the gateway's services (``nvfl gateway publish``), then serve it as its own process."""
    port = process.free_port()
    listen: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    if tls:
        listen.update(tls_cert=str(tls[0]), tls_key=str(tls[1]))
    config = gateway_config(
        directory, name, account, chain_state, s3_state, services, listen, max_executions, backend
    )
    published = nvfl("gateway", "publish", "--config", str(config), "--json")
    assert published.returncode == 0, published.stderr
    pid = process.start([str(NVFL), "gateway", "serve", "--config", str(config)], directory / "gateway.log")
    with process.stopped_on_error(pid):
        process.wait_port("127.0.0.1", port, timeout=60, pid=pid, what=f"gateway {name}")
    scheme = "https" if tls else "http"
    return Gateway(
        name=name,
        address=chain.account(account).address,
        endpoint=f"{scheme}://127.0.0.1:{port}",
        directory=directory,
        pid=pid,
        assets=json.loads(published.stdout),
        ca_file=str(tls[0]) if tls else None,
    )


def stop_gateway(gateway: Gateway) -> None:
    """Stop the gateway process, then any workload it left running (by pid, from its records)."""
    process.stop(gateway.pid)
    launcher = LocalLauncher(root=gateway.state_dir / "workloads")
    for record in (gateway.state_dir / "workloads").glob("*/*/workload.json"):
        launcher.stop(Workload.from_dict(json.loads(record.read_text())))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy value of ``predicate()`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


class Consumer:
    """The consumer's side: agreements and workflow DDOs with its own key, calls to gateways."""

    def __init__(self, chain_state: dict[str, Any], s3_state: dict[str, Any]) -> None:
        self.keeper = Keeper(
            KeeperSettings(
                rpc_url=chain_state["rpc_url"],
                private_key=chain.account(chain.CONSUMER).key.to_0x_hex(),
                deployment=load_deployment(chain_state["deployment_file"], HOOK_CONTRACTS),
                where="consumer",
            )
        )
        self.address = self.keeper.address
        self.chain_id: int = chain_state["chain_id"]
        self.s3 = s3.client(s3_state)
        self.bucket = s3_state["bucket"]

    def client(self, gateway: Gateway, sign: Callable[[str], str] | None = None) -> GatewayClient:
        """The consumer's client of ``gateway`` (``sign``: another signer claiming the consumer's address)."""
        return GatewayClient(
            gateway.endpoint,
            audience=gateway.address,
            address=self.address,
            sign=sign or self.keeper.sign_message,
            ca_file=gateway.ca_file,
            chain_id=self.chain_id,
        )

    def audience(self, gateway: Gateway) -> auth.Audience:
        """What the consumer's signatures for ``gateway`` bind: the chain, its address and its URL."""
        return auth.Audience(self.chain_id, gateway.address, gateway.endpoint)

    def raw(
        self, gateway: Gateway, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        return httpx.request(
            method, gateway.endpoint + path, content=body, headers=headers, verify=gateway.ca_file or True
        )

    def agreement(
        self,
        gateway: Gateway,
        service: str,
        lock: bool = True,
        time_out: int = 1000,
        amount: int | None = None,
    ) -> dict[str, Any]:
        """A new compute agreement on the asset of ``service`` paying ``amount`` base units (default: its
        price), paid unless not ``lock``, refundable after ``time_out`` blocks."""
        asset = gateway.asset(service)
        amount = self.keeper.token.base(asset["price"]) if amount is None else amount
        agreement = self.keeper.create_compute_agreement(
            "0x" + secrets.token_hex(32), asset["did"], gateway.address, amount, time_out=time_out
        )
        if lock:
            self.keeper.lock_payment(agreement)
        return agreement.to_dict()

    def ddo_key(self, did: str) -> str:
        return f"ddo/{did.removeprefix('did:nv:')}.json"

    def put_ddo(self, doc: dict[str, Any]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.ddo_key(doc["id"]), Body=json.dumps(doc).encode())

    def get_ddo(self, did: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.ddo_key(did))["Body"].read())

    def publish_workflow(self, main: dict[str, Any], provider: str) -> str:
        """Store the workflow DDO in SeaweedFS and register its DID (provider ``provider``); the DID."""
        seed = "0x" + secrets.token_hex(32)
        did = self.keeper.did_for(seed, self.address)
        self.put_ddo(ddo.build(did, self.address, main))
        url = f"s3://{self.bucket}/{self.ddo_key(did)}"
        self.keeper.register_did(seed, ddo.checksum(main), [provider], url)
        return did

    def annotate(self, did: str, **info: Any) -> None:
        """Record ``info`` in the DDO's ``additionalInformation`` (outside its checksummed block)."""
        doc = self.get_ddo(did)
        doc["service"][0]["attributes"]["additionalInformation"].update(info)
        self.put_ddo(doc)

    def coordinator_workflow(
        self, gateway: Gateway, session_id: str, model: dict[str, Any], participants: list[str], **conf: Any
    ) -> str:
        """A coordinator workflow seating the providers of the ``participants`` asset DIDs."""
        settings = {
            "rounds": 1,
            "epochs": 1,
            "min_participants": 1,
            "fraction": 1.0,
            "model": model,
            "heartbeat": 0.5,
            "stall_timeout": 60,
            "session_timeout": 600,
            "initial_model": None,
            **conf,
        }
        main = ddo.coordinator_main(settings, session_id, self.address, gateway.address, participants)
        return self.publish_workflow(main, gateway.address)

    def participant_workflow(
        self, gateway: Gateway, service: str, session_id: str, coordinator_did: str, model: dict[str, Any]
    ) -> str:
        main = ddo.participant_main(
            session_id,
            self.address,
            {"name": service},
            gateway.address,
            coordinator_did,
            gateway.asset(service)["did"],
            model,
        )
        return self.publish_workflow(main, gateway.address)
