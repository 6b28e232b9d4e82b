"""Deploy the contracts on a chain (implementation + ``initialize`` + wiring) and read/write deployment files.

A deployment file is JSON: ``{"chain_id": int, "contracts": {name: {"address": "0x..", "abi": [...]}}}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

from airflow_nevermined_fl.contracts import CONTRACTS
from airflow_nevermined_fl.contracts.client import Signer
from airflow_nevermined_fl.contracts.compile import Artifacts
from airflow_nevermined_fl.contracts.errors import DeploymentError

ZERO = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class Deployment:
    """Addresses and ABIs of the deployed contracts on one chain (``chain_id`` None: not recorded)."""

    chain_id: int | None
    addresses: dict[str, str]
    abis: dict[str, list[dict[str, Any]]]

    def contract(self, w3: Web3, name: str) -> Contract:
        if name not in self.addresses:
            raise DeploymentError(f"deployment has no contract {name}")
        return w3.eth.contract(address=self.addresses[name], abi=self.abis[name])

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "contracts": {n: {"address": self.addresses[n], "abi": self.abis[n]} for n in self.addresses},
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)
        return path


def load_deployment(path: str | os.PathLike[str], required: tuple[str, ...] = CONTRACTS) -> Deployment:
    """Read and validate a deployment file; errors name the file and what is wrong."""
    file = Path(path)
    if not file.is_file():
        raise DeploymentError(f"deployment file {file} does not exist")
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"deployment file {file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("chain_id"), int):
        raise DeploymentError(f"deployment file {file}: 'chain_id' must be an integer")
    contracts = data.get("contracts")
    if not isinstance(contracts, dict):
        raise DeploymentError(f"deployment file {file}: 'contracts' must be an object")
    addresses: dict[str, str] = {}
    abis: dict[str, list[dict[str, Any]]] = {}
    for name in required:
        entry = contracts.get(name)
        if not isinstance(entry, dict):
            raise DeploymentError(f"deployment file {file}: contract {name} is missing")
        address, abi = entry.get("address"), entry.get("abi")
        if not isinstance(address, str) or not Web3.is_address(address):
            raise DeploymentError(f"deployment file {file}: {name}.address is not an address: {address!r}")
        if not isinstance(abi, list):
            raise DeploymentError(f"deployment file {file}: {name}.abi must be a list")
        addresses[name], abis[name] = Web3.to_checksum_address(address), abi
    return Deployment(chain_id=data["chain_id"], addresses=addresses, abis=abis)


def deploy(signer: Signer, artifacts: Artifacts, provenance_off: bool = False) -> Deployment:
    """Deploy every contract from ``signer`` (owner, governor, minter), wired as Nevermined does."""
    addr = {n: signer.deploy(n, artifacts[n]["abi"], artifacts[n]["bytecode"]) for n in CONTRACTS}
    deployment = Deployment(
        chain_id=signer.w3.eth.chain_id, addresses=addr, abis={n: artifacts[n]["abi"] for n in CONTRACTS}
    )
    owner = signer.address
    calls: list[tuple[str, str, tuple[Any, ...]]] = [
        ("NeverminedConfig", "initialize", (owner, owner, provenance_off)),
        ("NeverminedToken", "initialize", (owner, owner)),
        ("DIDRegistry", "initialize", (owner, ZERO, ZERO, addr["NeverminedConfig"], ZERO)),
        ("ConditionStoreManager", "initialize", (owner, owner, addr["NeverminedConfig"])),
        ("TemplateStoreManager", "initialize", (owner,)),
        (
            "AgreementStoreManager",
            "initialize",
            (owner, addr["ConditionStoreManager"], addr["TemplateStoreManager"], addr["DIDRegistry"]),
        ),
        ("LockPaymentCondition", "initialize", (owner, addr["ConditionStoreManager"], addr["DIDRegistry"])),
        ("EscrowPaymentCondition", "initialize", (owner, addr["ConditionStoreManager"])),
        (
            "ComputeExecutionCondition",
            "initialize",
            (owner, addr["ConditionStoreManager"], addr["AgreementStoreManager"]),
        ),
        (
            "EscrowComputeExecutionTemplate",
            "initialize",
            (
                owner,
                addr["AgreementStoreManager"],
                addr["DIDRegistry"],
                addr["ComputeExecutionCondition"],
                addr["LockPaymentCondition"],
                addr["EscrowPaymentCondition"],
            ),
        ),
        # Wiring from Nevermined's deploy scripts.
        ("TemplateStoreManager", "proposeTemplate", (addr["EscrowComputeExecutionTemplate"],)),
        ("TemplateStoreManager", "approveTemplate", (addr["EscrowComputeExecutionTemplate"],)),
        ("ConditionStoreManager", "delegateCreateRole", (addr["AgreementStoreManager"],)),
        ("ConditionStoreManager", "grantProxyRole", (addr["EscrowPaymentCondition"],)),
        ("LockPaymentCondition", "grantProxyRole", (addr["AgreementStoreManager"],)),
        ("AgreementStoreManager", "grantProxyRole", (addr["EscrowComputeExecutionTemplate"],)),
    ]
    for name, function, args in calls:
        signer.transact(deployment.contract(signer.w3, name), name, function, *args)
    return deployment


def mint(signer: Signer, deployment: Deployment, to: str, amount: int) -> None:
    """Mint Nevermined tokens (the signer must hold the token's minter role)."""
    signer.transact(deployment.contract(signer.w3, "NeverminedToken"), "NeverminedToken", "mint", to, amount)
