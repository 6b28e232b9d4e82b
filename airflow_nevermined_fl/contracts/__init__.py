"""Nevermined 3.5.9 contracts: offline compile (cached), deploy on a chain, deployment files, transactions."""

from __future__ import annotations

from airflow_nevermined_fl.contracts.errors import (
    ChainError,
    ChainUnreachableError,
    DeploymentError,
    InvalidInputError,
    TxRevertedError,
)

# The contracts an FL session needs, in deployment order.
CONTRACTS: tuple[str, ...] = (
    "NeverminedConfig",
    "NeverminedToken",
    "DIDRegistry",
    "ConditionStoreManager",
    "TemplateStoreManager",
    "AgreementStoreManager",
    "LockPaymentCondition",
    "EscrowPaymentCondition",
    "ComputeExecutionCondition",
    "EscrowComputeExecutionTemplate",
)

__all__ = [
    "CONTRACTS",
    "ChainError",
    "ChainUnreachableError",
    "DeploymentError",
    "InvalidInputError",
    "TxRevertedError",
]
