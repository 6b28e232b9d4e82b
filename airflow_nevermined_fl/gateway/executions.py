"""A gateway's executions: one per agreement, launched once, watched, settled by the gateway itself.

Each execution is recorded (:mod:`.records`) before ``execute`` answers, so a retry or a restarted gateway
finds it again. A background monitor brings running executions up to date and settles finished ones with
the provider's own key: ComputeExecutionCondition, then the escrow release (both idempotent, retried on
the next tick after an error). A failed or stopped execution is never settled, so the consumer's refund
stays possible; but a participant whose upload of its session's last round the coordinator acknowledged
has done its work, however it ends afterwards (stopped by the consumer, its coordinator gone), and is
settled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from airflow_nevermined_fl.gateway.checks import Order, Refusal, check_execute, parse_request
from airflow_nevermined_fl.gateway.launchers import Launcher, Workload
from airflow_nevermined_fl.gateway.policy import visible
from airflow_nevermined_fl.gateway.records import Execution, Records
from airflow_nevermined_fl.gateway.resources import Provider
from airflow_nevermined_fl.gateway.workloads import CoordinatorPlan, ParticipantPlan, labels
from airflow_nevermined_fl.protocol import announce
from airflow_nevermined_fl.runtime import status
from airflow_nevermined_fl.runtime.config import ChannelSpec
from airflow_nevermined_fl.runtime.workload import UPLOAD_ACCEPTED, ExecutionState, SessionState, ended_state

log = logging.getLogger(__name__)

UPLOAD_LINES = 10_000
"""Log lines a participant's acknowledged last upload is looked for in (a round logs far fewer)."""
GRANT_QUERY = re.compile(r"\?[^\s'\"]*X-Amz-[^\s'\"]*")
"""The query of a presigned (SigV4) URL: its credential scope and signature."""


def coordinator_status(workload: Workload, cert: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The coordinator's ``/status`` JSON, over TLS from a server presenting the session certificate
    ``cert`` (the gateway generated its key pair); None while it does not answer, or not with that
    certificate."""
    try:
        return status.fetch(f"https://{workload.endpoints['status']}", timeout, cert)
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

    def running(self, consumer: str | None = None) -> int:
        """How many executions run now (of ``consumer`` only, if given)."""
        ids = [i for i in self.records.ids() if i not in self._idle]
        return sum(
            1
            for i in ids
            if (e := self.records.get(i))
            and e.state == ExecutionState.RUNNING
            and (consumer is None or e.consumer.lower() == consumer.lower())
        )

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
            self._room_for(caller)  # before the chain and any fetch; again below, under the launch lock
            order = check_execute(self.provider, caller, agreement_id, body)
            with self._launching:
                return self._launch(order)

    def _room_for(self, consumer: str) -> None:
        """Refuse a launch for ``consumer`` past its bound (429) or past the gateway's (503)."""
        config = self.provider.config
        if self.running(consumer) >= (bound := config.max_executions_per_consumer):
            raise Refusal(429, f"consumer {consumer} runs max_executions_per_consumer={bound}; retry later")
        if self.running() >= config.max_executions:
            raise Refusal(503, f"at capacity: {config.max_executions} executions running; retry later")

    def _launch(self, order: Order) -> Execution:
        config, plan, agreement_id = self.provider.config, order.plan, order.agreement.agreement_id
        self._room_for(order.agreement.consumer)
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
            last_round=plan.rounds - 1 if isinstance(plan, ParticipantPlan) else None,
        )
        self.records.save(execution)
        log.info(
            "agreement %s: %s %s launched as %s", agreement_id, plan.role, order.service.name, workload.id
        )
        return execution

    def stop(self, caller: str, agreement_id: str) -> Execution:
        """Stop the workload once; a running execution becomes ``stopped``, an ended one keeps its state.
        A participant whose last round's upload the coordinator acknowledged counts as ``finished`` (and is
        settled): its work is in the model, a stop cannot take it unpaid."""
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
                if self._work_done(execution, workload):
                    execution.state = ExecutionState.FINISHED
            self.records.save(execution)
        log.info("agreement %s: stopped by its consumer (state %s)", agreement_id, execution.state)
        return execution

    def _work_done(self, execution: Execution, workload: Workload) -> bool:
        """Whether a participant's own log (read once it ended) records the coordinator's acknowledgement
        of its upload of the session's last round."""
        if execution.last_round is None:
            return False
        done = f"{UPLOAD_ACCEPTED} {execution.last_round}"
        return done in self.launcher.logs(workload, UPLOAD_LINES).splitlines()

    def logs(self, execution: Execution, tail: int) -> str:
        """The workload's last ``tail`` log lines, the provider's dataset location and keys redacted, as
        much as the service's policy shows (:func:`..policy.visible`)."""
        text = self.redacted(self.launcher.logs(Workload.from_dict(execution.workload), tail))
        return visible(self.provider.config, execution, text, tail)

    def redacted(self, text: str) -> str:
        """``text`` for the consumer: without the provider's storage keys, dataset locations and the
        signatures of its storage grants (a presigned URL's query is a bearer credential)."""
        config = self.provider.config
        datasets = [s.dataset for s in config.services if s.dataset]
        for secret in [*config.storage.credentials().values(), *datasets]:
            text = text.replace(secret, "[redacted]")
        return GRANT_QUERY.sub("?[redacted]", text)

    async def follow(self, execution: Execution, period: float = 0.5) -> AsyncIterator[str]:
        """The workload's log (redacted) as it is written, until it ends: read on from where the last
        read stopped, never again from the start; everything written before the end is sent. Runs on the
        event loop (reads in worker threads): a follow waiting for lines holds no request thread."""
        workload, offset = Workload.from_dict(execution.workload), 0
        while True:
            running = (await asyncio.to_thread(self.launcher.status, workload)).running
            while True:  # catch up
                text, offset = await asyncio.to_thread(self.launcher.log_since, workload, offset, not running)
                if not text:
                    break
                yield visible(self.provider.config, execution, self.redacted(text))
            if not running:
                return
            await asyncio.sleep(period)

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
        cert = execution.tls_cert
        if execution.role == "coordinator" and cert and (snapshot := coordinator_status(workload, cert)):
            if execution.announcement is None:
                key, url = self.provider.config.private_key(), workload.endpoints["grpc"]
                execution.announcement = announce.sign(
                    key, execution.session_id, url, execution.tls_cert, execution.agreement
                )
            execution.coordinator, execution.coordinator_url = snapshot, workload.endpoints["grpc"]
            if snapshot.get("state") == SessionState.FINISHED and snapshot.get("model"):
                execution.state = ExecutionState.FINISHED
            elif snapshot.get("state") == SessionState.FAILED:
                execution.state = ExecutionState.FAILED
        if execution.state == ExecutionState.RUNNING and not process.running:
            execution.exit_code = process.exit_code
            execution.state = ended_state(process.exit_code)
            if execution.state == ExecutionState.FAILED and self._work_done(execution, workload):
                execution.state = ExecutionState.FINISHED

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
