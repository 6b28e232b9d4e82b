"""Errors raised by the chain layer. Messages never contain private keys."""

from __future__ import annotations


class ChainError(RuntimeError):
    """Base class of every chain-side failure."""


class ChainUnreachableError(ChainError):
    """The JSON-RPC endpoint did not answer after the bounded retries."""


class TxRevertedError(ChainError):
    """A transaction (or its gas estimation) reverted; names contract, function and reason."""

    def __init__(self, contract: str, function: str, reason: str, tx_hash: str | None = None) -> None:
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"{contract}.{function} reverted: {reason}{where}")
        self.contract = contract
        self.function = function
        self.reason = reason
        self.tx_hash = tx_hash


class StateError(ChainError):
    """The on-chain state does not allow this step (yet), e.g. a release before compute is fulfilled."""


class DeploymentError(ChainError):
    """The deployment file is missing, malformed, or does not match the chain."""


class InvalidInputError(ValueError):
    """Bad input detected before any transaction was sent."""


class UnknownAgreementError(InvalidInputError):
    """The agreement (its ids valid for its terms) was never created on this chain."""
