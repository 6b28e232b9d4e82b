"""Ask the providers' gateways to start the coordinator and the participants; stop everything at the end.

The consumer never launches anything itself: each gateway checks the agreement on chain and runs the
workload on its own backend, next to its own data.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_nevermined_fl.operators.base import SessionOperator, as_list, by_name, gateway
from airflow_nevermined_fl.operators.payment import refund_due

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
    tails in this task's log; then the refund of every payment for work not done (all of them when no
    model was published, else those ``publish_model`` reports unpaid). A refund the chain does not allow
    yet (its agreement's compute time-out, derived from ``session_timeout``, has not passed) is waited for
    in the triggerer (:class:`~..triggers.chain.BlockTrigger`), without a worker slot, then made: the run
    ends with every token released or refunded. A lost RPC fails the try (retried: stops are idempotent)."""

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
        context["ti"].xcom_push(key="stopped", value=stopped)  # kept across the wait for refunds
        return self._refund(context)

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

    def _unpaid(self) -> list[dict[str, Any]]:
        """The payments whose work was not done: all without a published model, else its ``unpaid``."""
        payments = as_list(self.payments) if self.session else []
        if not self.published:
            return payments
        unpaid = set(self.published.get("unpaid") or [])
        return [p for p in payments if p["name"] in unpaid]

    def _refund(self, context: Context) -> dict[str, Any]:
        """Refund what is due now; defer until the chain passes the last time-out still waited for.
        Output: ``stopped`` (each workload's end), ``refunds`` (each unpaid payment's outcome),
        ``session_completed``."""
        unpaid, consumer = self._unpaid(), self.consumer
        outcomes, waiting = refund_due(consumer, unpaid) if unpaid else ({}, {})
        stopped = context["ti"].xcom_pull(task_ids=self.task_id, key="stopped")
        result = {"stopped": stopped, "refunds": outcomes, "session_completed": bool(self.published)}
        for name, outcome in outcomes.items():
            self.log.info("payment of %s: %s", name, outcome)
        if errors := sorted(n for n, o in outcomes.items() if o["outcome"] == "error"):
            raise AirflowException(f"refunds of {errors} failed (chain RPC); the retry refunds what is due")
        if waiting:
            from airflow_nevermined_fl.triggers.chain import BlockTrigger

            block = max(waiting.values())
            seconds = max(0, block - consumer.get_conn().w3.eth.block_number) * consumer.block_time
            self.log.info(
                "refunds of %s due after block %d (~%.0fs): waiting", sorted(waiting), block, seconds
            )
            trigger = BlockTrigger(self.conf["consumer_conn_id"], block, timeout=2 * seconds + 600)
            self.defer(trigger=trigger, method_name="refund_when_due")
        return result

    def refund_when_due(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """After the wait for the time-outs: refund (the chain decides again what is due)."""
        if event is not None and event.get("status") != "success":
            raise AirflowException(event.get("message") or f"waiting for the refunds failed: {event}")
        return self._refund(context)
