"""Ask the providers' gateways to start the coordinator and the participants; stop everything at the end.

The consumer never launches anything itself: each gateway checks the agreement on chain and runs the
workload on its own backend, next to its own data.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_nevermined_fl.operators.base import SessionOperator, as_list, by_name, gateway
from airflow_nevermined_fl.operators.payment import refund

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_nevermined_fl.protocol.client import GatewayClient

LOG_TAIL = 40


class _ExecuteOperator(SessionOperator):
    """Signed ``execute`` of one agreement on its provider's gateway (idempotent per agreement)."""

    template_fields: tuple[str, ...] = ("session", "workflow", "payments")
    ui_color = "#c9e4d6"

    def __init__(self, *, workflow: Any, payments: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow = workflow
        self.payments = payments

    def _execute(self, name: str, workflow_did: str) -> dict[str, Any]:
        from airflow_nevermined_fl.protocol.client import GatewayError

        payment = by_name(as_list(self.payments))[name]
        try:
            execution = gateway(self.consumer, payment).execute(payment["agreement"], workflow_did)
        except GatewayError as err:
            raise AirflowFailException(f"{payment['role']} {name}: {err}") from None
        self.log.info(
            "%s %s: execution of agreement %s on %s is %s",
            payment["role"],
            name,
            payment["agreement"]["agreement_id"],
            payment["endpoint"],
            execution["state"],
        )
        return {
            "name": name,
            "endpoint": payment["endpoint"],
            "provider": payment["provider"],
            "agreement_id": payment["agreement"]["agreement_id"],
            "execution": execution,
        }


class StartCoordinatorOperator(_ExecuteOperator):
    """The coordinator provider's gateway checks the agreement and starts the coordinator from the
    workflow DDO; returns at once (the wait for its URL is a deferred task)."""

    def execute(self, context: Context) -> dict[str, Any]:
        return self._execute(self.session["coordinator"]["name"], self.workflow["coordinator_did"])


class StartParticipantOperator(_ExecuteOperator):
    """One data provider (mapped): its gateway checks the agreement and runs the participant next to its
    data, connected to the coordinator published in the coordinator's workflow DDO.

    The gateway fulfils its ComputeExecutionCondition on completion, not here: the contracts refund only
    an unfulfilled, timed-out compute condition, so fulfilling at launch would make a failed session
    unrefundable."""

    template_fields = ("session", "provider", "workflow", "payments")

    def __init__(self, *, provider: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.provider = provider

    def execute(self, context: Context) -> dict[str, Any]:
        name = self.provider["name"]
        return self._execute(name, self.workflow["participant_dids"][name])


class TeardownSessionOperator(SessionOperator):
    """Teardown task: ``stop`` on every gateway the run paid (whichever step failed), their workloads' log
    tails in this task's log, and on failure the consumer's refunds where the contracts allow."""

    template_fields = ("session", "payments", "published")
    ui_color = "#f3d6d6"

    def __init__(self, *, payments: Any, published: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payments = payments
        self.published = published

    def execute(self, context: Context) -> dict[str, Any]:
        payments = as_list(self.payments) if self.session else []
        consumer = self.consumer
        clients = [gateway(consumer, payment) for payment in payments]  # connections read here, once
        # Independent gateways: stopped side by side (each stop waits for its workload to end).
        with ThreadPoolExecutor(max_workers=min(8, len(payments) or 1)) as pool:
            stopped = list(pool.map(self._stop, clients, payments))
        refunds = self._refund(payments) if self.session and not self.published else {}
        return {"stopped": stopped, "refunds": refunds, "session_completed": bool(self.published)}

    def _stop(self, client: GatewayClient, payment: dict[str, Any]) -> dict[str, Any]:
        from airflow_nevermined_fl.protocol.client import GatewayError

        agreement_id = payment["agreement"]["agreement_id"]
        entry: dict[str, Any] = {"name": payment["name"], "role": payment["role"]}
        try:
            status = client.stop(agreement_id)
            entry |= {"state": status["state"], "exit_code": status["exit_code"]}
            self.log.info(
                "stopped %s %s (%s, exit code %s); last log lines:\n%s",
                payment["role"],
                payment["name"],
                status["state"],
                status["exit_code"],
                client.logs(agreement_id, LOG_TAIL),
            )
        except GatewayError as err:  # never started (404) or the gateway is down: report, go on
            self.log.warning("stop %s %s: %s", payment["role"], payment["name"], err)
            entry |= {"state": None, "error": str(err)}
        return entry

    def _refund(self, payments: list[dict[str, Any]]) -> dict[str, Any]:
        from airflow_nevermined_fl.contracts.errors import ChainError

        refunds: dict[str, Any] = {}
        for payment in payments:
            try:
                refunds[payment["name"]] = {"tx_hash": refund(self.conf["consumer_conn_id"], payment)}
            except ChainError as err:  # e.g. the agreement's time-out has not passed yet: report, go on
                self.log.warning("refund for %s not possible now: %s", payment["name"], err)
                refunds[payment["name"]] = {"tx_hash": None, "error": str(err)}
        return refunds
