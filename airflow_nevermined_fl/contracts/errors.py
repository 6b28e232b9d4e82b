"""Errors raised by the chain layer. Messages never contain private keys."""

from __future__ import annotations


class ChainError(RuntimeError):
    """Base class of every chain-side failure."""


class ChainUnreachableError(ChainError):
    """The JSON-RPC endpoint did not answer: after ``connect``'s bounded retries, or during a later call or
    transaction (connection refused or reset, no answer within the request timeout, or an HTTP error status).
    The message names the RPC URL and what was being done; ``reason`` is the short failure (e.g.
    ``"unreachable: ConnectionError (Connection refused)"``)."""

    def __init__(
        self,
        message: str,
        *,
        rpc_url: str | None = None,
        reason: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.rpc_url = rpc_url
        self.reason = reason
        self.status_code = status_code


class RpcTimeoutError(ChainUnreachableError):
    """The JSON-RPC endpoint gave no answer (or took no connection) within the request timeout."""


class RpcHttpError(ChainUnreachableError):
    """The JSON-RPC endpoint (or a proxy before it) answered an HTTP error status instead of JSON-RPC."""


class TxRevertedError(ChainError):
    """A transaction (or its gas estimation) reverted; names contract, function and reason."""

    def __init__(self, contract: str, function: str, reason: str, tx_hash: str | None = None) -> None:
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"{contract}.{function} reverted: {reason}{where}")
        self.contract = contract
        self.function = function
        self.reason = reason
        self.tx_hash = tx_hash


class ReceiptTimeoutError(ChainError):
    """A transaction was sent but not mined within the receipt timeout: not a revert, it may still be mined.
    Re-running the step is safe: it reads the chain first, and sends nothing while the account still has
    a pending transaction (:class:`PendingTransactionError`)."""

    def __init__(self, contract: str, function: str, tx_hash: str, timeout: float) -> None:
        super().__init__(
            f"{contract}.{function}: transaction {tx_hash} not mined within {timeout:g} s"
            " (it may still be mined; a retry checks the chain first)"
        )
        self.contract = contract
        self.function = function
        self.tx_hash = tx_hash
        self.timeout = timeout


class PendingTransactionError(ChainError):
    """The account has a transaction the chain has not mined yet (e.g. one whose receipt wait timed out):
    nothing is sent until it is mined or dropped, since the state this step read may be about to change."""


class StateError(ChainError):
    """The on-chain state does not allow this step (yet), e.g. a release before compute is fulfilled."""


class DeploymentError(ChainError):
    """The deployment file is missing, malformed, or does not match the chain."""


class InvalidInputError(ValueError):
    """Bad input detected before any transaction was sent."""


class UnknownAgreementError(InvalidInputError):
    """The agreement (its ids valid for its terms) was never created on this chain."""
