"""A gateway's executions: one per agreement, launched once, watched, settled by the gateway itself.

Each execution is recorded (:mod:`.records`) before ``execute`` answers, so a retry or a restarted gateway
finds it again. A background monitor brings running executions up to date and settles finished ones with
the provider's own key: ComputeExecutionCondition, then the escrow release (both idempotent, retried on
the next tick after an error). A failed or stopped execution is never settled, so the consumer's refund
stays possible.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from airflow_nevermined_fl.gateway.checks import Order, Refusal, check_execute, parse_request
from airflow_nevermined_fl.gateway.launchers import Launcher, Workload
from airflow_nevermined_fl.gateway.records import Execution, Records
from airflow_nevermined_fl.gateway.resources import Provider
from airflow_nevermined_fl.gateway.workloads import CoordinatorPlan, labels
from airflow_nevermined_fl.protocol import announce
from airflow_nevermined_fl.runtime import status
from airflow_nevermined_fl.runtime.config import ChannelSpec
from airflow_nevermined_fl.runtime.workload import ExecutionState, SessionState, ended_state

log = logging.getLogger(__name__)

FOLLOW_LINES = 1_000_000
GRANT_QUERY = re.compile(r"\?[^\s'\"]*X-Amz-[^\s'\"]*")
"""The query of a presigned (SigV4) URL: its credential scope and signature."""


def coordinator_status(workload: Workload, timeout: float = 2.0) -> dict[str, Any] | None:
    """The coordinator's ``/status`` JSON; None while it does not answer."""
    try:
        return status.fetch(f"http://{workload.endpoints['status']}", timeout)
    except (OSError, ValueError):
        return None


class Executions:
    """The executions of one gateway on its launcher."""

    def __init__(self, provider: Provider, launcher: Launcher) -> None:
        self.provider = provider
        self.launcher = launcher
        self.records = Records(provider.config.state_dir / "executions")
        self._launching = threading.Lock()
        self._idle: set[str] = set()

    def running(self) -> int:
        """How many executions run now."""
        ids = [i for i in self.records.ids() if i not in self._idle]
        return sum(1 for i in ids if (e := self.records.get(i)) and e.state == ExecutionState.RUNNING)

    def authorized(self, caller: str, agreement_id: str) -> Execution:
        """The execution of ``agreement_id``, if ``caller`` is its consumer."""
        execution = self.records.get(agreement_id)
        if execution is None:
            raise Refusal(404, f"no execution of agreement {agreement_id} at this gateway")
        if execution.consumer.lower() != caller.lower():
            raise Refusal(403, f"signer {caller} is not the consumer of agreement {agreement_id}")
        return execution

    # -- compute calls -----------------------------------------------------------------------------------

    def execute(self, caller: str, agreement_id: str, body: Any) -> Execution:
        """Launch the agreement's workload after every check; a retry returns the recorded execution."""
        _, workflow_did = parse_request(agreement_id, body)
        with self.records.lock(agreement_id):
            if self.records.path(agreement_id).exists():
                existing = self.authorized(caller, agreement_id)
                if existing.workflow_did != workflow_did:
                    raise Refusal(409, f"agreement {agreement_id} already executes {existing.workflow_did}")
                return existing
            order = check_execute(self.provider, caller, agreement_id, body)
            with self._launching:
                return self._launch(order)

    def _launch(self, order: Order) -> Execution:
        config, plan, agreement_id = self.provider.config, order.plan, order.agreement.agreement_id
        if self.running() >= config.max_executions:
            raise Refusal(503, f"at capacity: {config.max_executions} executions running; retry later")
        spec = plan.spec(
            self.launcher, labels(config.name, agreement_id, plan.role, order.service.name), self.provider
        )
        try:
            workload = self.launcher.start(spec)
        except Exception as exc:  # noqa: BLE001 - any backend failure: nothing recorded, a clear answer
            reason = self.redacted(str(exc))  # e.g. a backend refusing the dataset path names it
            raise Refusal(503, f"launch failed on the {self.launcher.backend} backend: {reason}") from None
        execution = Execution(
            agreement_id=agreement_id,
            service=order.service.name,
            role=plan.role,
            did=order.did,
            workflow_did=order.workflow_did,
            consumer=order.agreement.consumer,
            session_id=order.session_id,
            started=workload.started,
            agreement=order.agreement.to_dict(),
            workload=workload.to_dict(),
            tls_cert=spec.files.get(ChannelSpec.tls_cert) if isinstance(plan, CoordinatorPlan) else None,
        )
        self.records.save(execution)
        log.info(
            "agreement %s: %s %s launched as %s", agreement_id, plan.role, order.service.name, workload.id
        )
        return execution

    def stop(self, caller: str, agreement_id: str) -> Execution:
        """Stop the workload once; a running execution becomes ``stopped``, an ended one keeps its state."""
        with self.records.lock(agreement_id):
            execution = self.authorized(caller, agreement_id)
            if execution.stopped:
                return execution
            self._refresh(execution)
            workload = Workload.from_dict(execution.workload)
            self.launcher.stop(workload)  # container backends keep the exit code and log tail in details
            execution.workload = workload.to_dict()
            execution.stopped = True
            execution.exit_code = self.launcher.status(workload).exit_code
            if execution.state == ExecutionState.RUNNING:
                execution.state = ExecutionState.STOPPED
            self.records.save(execution)
        log.info("agreement %s: stopped by its consumer (state %s)", agreement_id, execution.state)
        return execution

    def logs(self, execution: Execution, tail: int) -> str:
        """The workload's last ``tail`` log lines, the provider's dataset location and keys redacted."""
        return self.redacted(self.launcher.logs(Workload.from_dict(execution.workload), tail))

    def redacted(self, text: str) -> str:
        """``text`` for the consumer: without the provider's storage keys, dataset locations and the
        signatures of its storage grants (a presigned URL's query is a bearer credential)."""
        config = self.provider.config
        datasets = [s.dataset for s in config.services if s.dataset]
        for secret in [*config.storage.credentials().values(), *datasets]:
            text = text.replace(secret, "[redacted]")
        return GRANT_QUERY.sub("?[redacted]", text)

    def follow(self, execution: Execution, period: float = 0.5) -> Iterator[str]:
        """The workload's log lines as they are written, until it ends."""
        workload, sent = Workload.from_dict(execution.workload), 0
        while True:
            running = self.launcher.status(workload).running
            lines = self.logs(execution, FOLLOW_LINES).splitlines()
            yield from (line + "\n" for line in lines[sent:])
            sent = len(lines)
            if not running:
                return
            time.sleep(period)

    def backend_healthy(self) -> bool:
        """Whether the backend answers (and, locally, the FL runtime is installed)."""
        try:
            if self.launcher.backend == "local":
                from airflow_nevermined_fl.runtime_env import runtime_python

                runtime_python()
            self.launcher.find(f"gw-{self.provider.config.name}", "health-check")
        except Exception:  # noqa: BLE001 - any failure is "unhealthy"
            return False
        return True

    # -- monitor -----------------------------------------------------------------------------------------

    def _refresh(self, execution: Execution) -> None:
        """A running execution's state from its workload (and, for the coordinator, its ``/status``)."""
        if execution.state != ExecutionState.RUNNING:
            return
        workload = Workload.from_dict(execution.workload)
        process = self.launcher.status(workload)
        if execution.role == "coordinator" and (snapshot := coordinator_status(workload)) is not None:
            if execution.announcement is None and execution.tls_cert:
                key, url = self.provider.config.private_key(), workload.endpoints["grpc"]
                execution.announcement = announce.sign(key, execution.session_id, url, execution.tls_cert)
            execution.coordinator, execution.coordinator_url = snapshot, workload.endpoints["grpc"]
            if snapshot.get("state") == SessionState.FINISHED and snapshot.get("model"):
                execution.state = ExecutionState.FINISHED
            elif snapshot.get("state") == SessionState.FAILED:
                execution.state = ExecutionState.FAILED
        if execution.state == ExecutionState.RUNNING and not process.running:
            execution.exit_code = process.exit_code
            execution.state = ended_state(process.exit_code)

    def _settle(self, execution: Execution) -> None:
        keeper, settlement = self.provider.keeper, execution.settlement
        try:
            settlement["compute_tx"] = keeper.fulfill_compute(execution.agreement) or settlement["compute_tx"]
            settlement["release_tx"] = keeper.release_escrow(execution.agreement) or settlement["release_tx"]
        except Exception as exc:  # noqa: BLE001 - recorded, retried on the next tick
            if settlement["error"] != str(exc):
                log.warning("agreement %s: settlement failed (will retry): %s", execution.agreement_id, exc)
            settlement["error"] = str(exc)
            return
        settlement.update(settled=True, error=None)
        log.info(
            "agreement %s: settled (escrow released to %s)", execution.agreement_id, self.provider.address
        )

    def tick(self) -> None:
        """One pass over the executions with something left to do."""
        for agreement_id in self.records.ids():
            if agreement_id in self._idle:
                continue
            with self.records.lock(agreement_id):
                execution = self.records.get(agreement_id)
                if execution is None:
                    continue
                before = asdict(execution)
                self._refresh(execution)
                if execution.state == ExecutionState.FINISHED and not execution.settlement["settled"]:
                    self._settle(execution)
                if asdict(execution) != before:
                    self.records.save(execution)
                if execution.idle:
                    self._idle.add(agreement_id)

    def monitor(self, stop: threading.Event, period: float = 0.5) -> None:
        """Run :meth:`tick` every ``period`` seconds until ``stop`` is set."""
        while not stop.wait(period):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the monitor outlives any one failure
                log.exception("gateway monitor: tick failed")
