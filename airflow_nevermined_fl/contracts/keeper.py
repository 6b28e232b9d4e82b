"""Keeper: one actor's account on a chain running the Nevermined contracts (no Airflow).

Every step reads chain state first, so re-running it after it succeeded sends no transaction and returns
the same result (``tx_hash`` None). Bad input raises :class:`InvalidInputError` before any transaction; a
step the chain state does not allow (yet) raises :class:`StateError`; a revert raises
:class:`TxRevertedError` naming contract, function and reason.

One account's transactions never overlap between the processes of one host: each transaction, and the
consumer's check-approve-lock sequence as a whole, holds the account's file lock
(:mod:`~airflow_nevermined_fl.contracts.account_lock`), so tasks of one actor may run in parallel there.
Workers on several hosts sharing one account need an Airflow pool of one slot per actor instead.

The consumer's Airflow uses it through :class:`~airflow_nevermined_fl.hooks.nevermined.NeverminedHook`
(settings from a connection); a provider's gateway builds it from its own config.

This module is the import point. The keeper's parts, one module each: ``connection`` (settings, account,
contracts, transactions), ``did_registry``, ``agreements``, ``escrow``, ``provenance``; chain value helpers
in ``values``, token units and base units in ``units``, the records passed between tasks in ``records``; a
consumer's agreements read back from the chain's events and their refunds (no local ledger) in
``recovery``.
"""

from __future__ import annotations

import logging

from airflow_nevermined_fl.contracts.agreements import CONDITION_STATES
from airflow_nevermined_fl.contracts.connection import HOOK_CONTRACTS, KeeperSettings
from airflow_nevermined_fl.contracts.errors import StateError, UnknownAgreementError
from airflow_nevermined_fl.contracts.escrow import EscrowMixin
from airflow_nevermined_fl.contracts.provenance import ProvenanceMixin
from airflow_nevermined_fl.contracts.records import ComputeAgreement, DidRecord
from airflow_nevermined_fl.contracts.recovery import (
    ChainAgreement,
    RefundReport,
    consumer_agreements,
    payment_status,
    refund_due_agreements,
)
from airflow_nevermined_fl.contracts.values import DID_PREFIX, address_of, did_str

__all__ = [
    "CONDITION_STATES",
    "ChainAgreement",
    "ComputeAgreement",
    "DID_PREFIX",
    "DidRecord",
    "HOOK_CONTRACTS",
    "Keeper",
    "KeeperSettings",
    "RefundReport",
    "StateError",
    "UnknownAgreementError",
    "address_of",
    "consumer_agreements",
    "did_str",
    "payment_status",
    "refund_due_agreements",
]


class Keeper(EscrowMixin, ProvenanceMixin):
    """Drive Nevermined's DID registry and compute agreements from one actor's account."""

    log = logging.getLogger(__name__)
