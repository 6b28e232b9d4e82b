"""Records passed between tasks (JSON-serializable): a registered DID and a compute agreement."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from airflow_nevermined_fl.contracts.errors import InvalidInputError


@dataclass(frozen=True)
class DidRecord:
    """A DID as registered in the DIDRegistry."""

    did: str
    owner: str
    url: str
    checksum: str
    providers: list[str]
    block_number: int
    tx_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ComputeAgreement:
    """An EscrowComputeExecutionTemplate agreement; condition order: compute, lock, escrow."""

    agreement_id: str
    seed: str
    did: str
    consumer: str
    provider: str
    amounts: list[int]
    receivers: list[str]
    token: str
    escrow: str
    compute_condition_id: str
    lock_condition_id: str
    escrow_condition_id: str
    time_lock: int
    time_out: int
    tx_hash: str | None = None

    @property
    def total(self) -> int:
        return sum(self.amounts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputeAgreement:
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"tx_hash"}
        if missing:
            raise InvalidInputError(f"agreement: missing fields {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})
