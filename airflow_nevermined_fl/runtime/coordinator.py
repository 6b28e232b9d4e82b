"""Coordinator service: xain-fl 0.6's ``Coordinator`` behind gRPC, with live status, safe uploads and an end.

A secure session (the default) serves gRPC over TLS with the session's key pair, admits only its data
providers, each once, by their seat credentials (:mod:`.channel`), and exchanges weights through storage
grants (:class:`~.storage.Grants`): each selected participant gets, with its ``StartTrainingRound``
answer, a grant to read the global model and one to write its own upload. Uploads are checked against the
model's shape before they are allocated and ``number_samples`` against the provider's declared rows. A
``stock_sdk`` session (insecure: plaintext, peers known by address, bucket keys) lets stock xain-sdk
participants join.

Usage (in the FL runtime venv)::

    python -m airflow_nevermined_fl.runtime.coordinator --config session.json [--status-file PATH]

Once serving it prints one line ``NVFL_COORDINATOR_READY {"grpc": "host:port", "status_url": ...}`` and
writes the same JSON to ``--status-file`` (ports actually bound, also when the config says 0).
Exit codes (:class:`~.workload.ExitCode`): 0 FINISHED (final model written), 1 FAILED (stall, storage),
2 bad input (nothing written), 143 stopped by SIGTERM/SIGINT before finishing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from numpy import ndarray
from structlog import get_logger
from xain_fl.coordinator.coordinator import Coordinator
from xain_fl.coordinator.coordinator_grpc import CoordinatorGrpc
from xain_fl.coordinator.participants import Participants
from xain_fl.fl.coordinator.aggregate import WeightedAverageAggregator
from xain_fl.tools.exceptions import InvalidRequestError, UnknownParticipantError
from xain_proto.fl import coordinator_pb2_grpc
from xain_proto.fl.coordinator_pb2 import (
    EndTrainingRoundResponse,
    RendezvousReply,
    RendezvousRequest,
    RendezvousResponse,
    StartTrainingRoundRequest,
    State,
)

from airflow_nevermined_fl.runtime import logs, models, strategies
from airflow_nevermined_fl.runtime.arrays import ArraySpec, RefusedPayload
from airflow_nevermined_fl.runtime.channel import (
    TICKET_HEADER,
    TOKEN_HEADER,
    SeatRefused,
    Seats,
    certificate_fingerprint,
    participant_id,
)
from airflow_nevermined_fl.runtime.config import ConfigError, SessionConfig, load
from airflow_nevermined_fl.runtime.refusals import Refusals
from airflow_nevermined_fl.runtime.status import StatusServer
from airflow_nevermined_fl.runtime.storage import (
    BucketExchange,
    Exchange,
    GlobalWeightsWriter,
    Grants,
    LocalWeightsReader,
    StorageError,
    load_npz,
)
from airflow_nevermined_fl.runtime.workload import ExitCode, SessionState

logger = get_logger(__name__)

READY_PREFIX = "NVFL_COORDINATOR_READY "
THROTTLED = "too many refused calls from this host; retry later"


METRIC_RANGES = {
    "loss": (0.0, math.inf),
    "accuracy": (0.0, 1.0),
    "global_loss": (0.0, math.inf),
    "global_accuracy": (0.0, 1.0),
    "global_rows": (0.0, math.inf),
}
"""The per-round metrics kept, each within its range (else dropped): the locally trained weights' ``loss``
and ``accuracy``; the federated evaluation of the received global model on ``global_rows`` held-out rows."""


def _round_metrics(metrics_json: str) -> dict[str, float]:
    """From an SDK metrics string (untrusted: malformed -> {}): the last epoch's value of each of
    :data:`METRIC_RANGES` within its range, and ``train_seconds``, the sum of the per-epoch ``seconds`` our
    participants report."""
    try:
        points = json.loads(metrics_json) if len(metrics_json) < 1_000_000 else []
        latest: dict[str, tuple[int, float]] = {}
        seconds: list[float] = []
        for point in points if isinstance(points, list) else []:
            epoch = int(point["tags"]["epoch_global"])
            for key, value in point["fields"].items():
                number = float(value)
                if not math.isfinite(number):
                    continue
                if key == "seconds":
                    seconds.append(number)
                elif (
                    key in METRIC_RANGES
                    and METRIC_RANGES[key][0] <= number <= METRIC_RANGES[key][1]
                    and (key not in latest or epoch >= latest[key][0])
                ):
                    latest[key] = (epoch, number)
        result = {key: value for key, (_, value) in latest.items()}
        return {**result, "train_seconds": sum(seconds)} if seconds else result
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _weighted(updates: Sequence[tuple[float, dict[str, float]]], key: str) -> float | None:
    pairs = [(n, m[key]) for n, m in updates if key in m]
    total = sum(n for n, _ in pairs)
    if not pairs or total == 0:
        return None
    return sum(n * value for n, value in pairs) / total


def _evaluation(updates: list[tuple[int, dict[str, float]]]) -> dict[str, float | None]:
    """The round's federated evaluation of its global model: each participant's score weighted by its
    held-out rows, counted at most as its training samples (a participant weighs in the evaluation no more
    than in the aggregate, whatever row count it claims)."""
    rows = [(min(m["global_rows"], n), m) for n, m in updates if "global_rows" in m]
    return {
        "global_loss": _weighted(rows, "global_loss"),
        "global_accuracy": _weighted(rows, "global_accuracy"),
        "global_rows": sum(r for r, m in rows if "global_accuracy" in m) or None,
    }


class FiniteAverage(WeightedAverageAggregator):
    """xain's weighted average, in float64, refused unless every weight is finite."""

    def aggregate(self, multiple_model_weights: list[ndarray], aggregation_data: list[int]) -> ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            float64 = [w.astype(np.float64, copy=False) for w in multiple_model_weights]
            weights = super().aggregate(float64, aggregation_data)
        if not np.isfinite(weights).all():
            raise RefusedPayload("the aggregate of the round is not finite")
        return weights


class StrategyStep(FiniteAverage):
    """The round's finite weighted mean (its aggregate: all that secure aggregation reveals) made the next
    global model by the session's server strategy, from ``current()``: the global model it trained from."""

    def __init__(self, strategy: strategies.ServerStrategy, current: Callable[[], ndarray]) -> None:
        self.strategy, self.current = strategy, current

    def aggregate(self, multiple_model_weights: list[ndarray], aggregation_data: list[int]) -> ndarray:
        mean = super().aggregate(multiple_model_weights, aggregation_data)
        with np.errstate(over="ignore", invalid="ignore"):
            weights = self.strategy.step(self.current(), mean)
        if not np.isfinite(weights).all():
            raise RefusedPayload(f"the {self.strategy.spec.name} step of the round is not finite")
        return weights


class _AdmittingReader:
    """xain's reader of uploads, each one passed through ``admit`` before xain adds it to the round."""

    def __init__(self, reader: LocalWeightsReader, admit: Callable[[ndarray], ndarray]) -> None:
        self.reader, self.admit = reader, admit

    def read_weights(self, participant_id: str, round: int) -> ndarray:  # noqa: A002 - xain's signature
        return self.admit(self.reader.read_weights(participant_id, round))


class SessionCoordinator(Coordinator):
    """xain's state machine, serialized by one lock, with refused uploads, round metrics and progress time;
    each upload bounded (:meth:`_admit`), the aggregate finite."""

    def __init__(
        self, config: SessionConfig, exchange: Exchange, weights: ndarray, seats: Seats | None = None
    ) -> None:
        self.lock = threading.RLock()
        self.strategy = strategies.build(config.strategy)
        self.seats = seats
        self.refused_uploads = 0
        self.refusals = Refusals()
        self.rounds_metrics: list[dict[str, Any]] = []
        self.last_progress = time.monotonic()
        self._round_started: dict[int, float] = {}
        self._round_refused: dict[int, int] = {}  # refused uploads, by round
        self._round_updates: dict[str, tuple[int, dict[str, float]]] = {}  # this round's, by participant
        self._round_messages: dict[str, Any] = {}
        self.min_participants = config.min_participants
        self.max_update_norm = config.max_update_norm
        self._samples = 0  # number_samples of the end of round being handled
        self.last_removal: str | None = None  # who was removed last and why (a stalled session's reason)
        super().__init__(
            global_weights_writer=GlobalWeightsWriter(exchange),
            local_weights_reader=_AdmittingReader(
                LocalWeightsReader(exchange, self.upload_spec), self._admit
            ),
            aggregator=StrategyStep(self.strategy, lambda: self.weights),
            num_rounds=config.rounds,
            minimum_participants_in_round=config.min_participants,
            fraction_of_participants=config.fraction,
            weights=weights,
            epochs=config.epochs,
            participants=Participants(
                heartbeat_time=config.heartbeat_period, heartbeat_timeout=config.heartbeat_timeout
            ),
        )

    def upload_spec(self) -> ArraySpec:
        """What an upload must be: float64 weights of the model's shape (xain's init round of a custom model:
        of the first upload's shape; any 1-D shape for that first one)."""
        if self.weights.size:
            return ArraySpec(shape=self.weights.shape)
        first = next(iter(self.round.updates.values()), None)
        return ArraySpec(shape=first["model_weights"].shape if first else None)

    def _admit(self, weights: ndarray) -> ndarray:
        """An upload, refused when it is farther from the global model than ``max_update_norm`` times that
        model's norm (at least 1), or when the round's weighted sum with it is not finite in float64."""
        with np.errstate(over="ignore", invalid="ignore"):
            update = weights.astype(np.float64)
            if self.weights.size:
                bound = self.max_update_norm * max(1.0, float(np.linalg.norm(self.weights)))
                distance = float(np.linalg.norm(update - self.weights))
                if not distance <= bound:
                    raise RefusedPayload(
                        f"update norm {distance:.3g} above the bound {bound:.3g} (max_update_norm "
                        f"{self.max_update_norm:g} x the global model's norm)"
                    )
            total = self._samples * update
            for other in self.round.updates.values():
                total = total + other["aggregation_data"] * other["model_weights"]
            if not np.isfinite(total).all():
                raise RefusedPayload("the round's weighted sum with this upload is not finite")
        return update

    def _check_end_of_round(self, message: Any, participant_id: str) -> None:
        """A seated participant ends a round it was selected for, with its own upload and at most its
        dataset's rows (xain's init round of a custom model, which trains nothing: exactly 0)."""
        if self.seats is None:
            return
        if not self._round_open() or participant_id not in self.round.participant_ids:
            raise RefusedPayload("end of round outside a round it was selected for")
        if message.participant_id != participant_id:
            raise RefusedPayload(
                f"end of round names the upload {message.participant_id[:80]!r}, not its own"
            )
        low, high = (1, self.seats.max_samples(participant_id)) if self.weights.size else (0, 0)
        if not low <= message.number_samples <= high:
            raise RefusedPayload(
                f"number_samples {message.number_samples} outside {low}..{high} "
                + ("(declared rows)" if high else "(the init round trains nothing)")
            )

    def _fingerprint(self) -> tuple[int, int, int, int]:
        return (self.state, self.current_round, self.participants.len(), len(self.round.updates))

    def _observe(self, before: tuple[int, int, int, int]) -> None:
        if self._fingerprint() != before:
            self.last_progress = time.monotonic()
        if self.state == State.ROUND and self.current_round not in self._round_started:
            self._round_started[self.current_round] = time.time()

    def on_message(self, message: Any, participant_id: str) -> Any:
        with self.lock:
            before, started = self._fingerprint(), time.monotonic()
            try:
                return super().on_message(message, participant_id)
            finally:
                self._observe(before)
                self._excuse(time.monotonic() - started)

    def _excuse(self, busy: float) -> None:
        """Nobody's heartbeat could be served while one call held the lock (e.g. its storage retried
        through an outage): push every participant's expiry back by that long."""
        if busy > 0.5:
            for context in self.participants.participants.values():
                context.heartbeat_expires += busy

    def _round_open(self) -> bool:
        """A round is on: ROUND, or a started round suspended in STANDBY (:meth:`_suspended`)."""
        return self.state == State.ROUND or self._suspended()

    def _suspended(self) -> bool:
        """A started round fell short of its minimum (a participant was removed): STANDBY until rendezvous
        refill it. Its selected participants may still start, train and end it; their uploads are held
        (:meth:`_hold`) and aggregated with the rest once it resumes."""
        return self.state == State.STANDBY and self.current_round in self._round_started

    def remove_participant(self, participant_id: str, reason: str = "removed") -> None:
        with self.lock:
            before = self._fingerprint()
            self.last_removal = f"{participant_id} was removed ({reason})"
            super().remove_participant(participant_id)
            self.round.updates.pop(participant_id, None)  # not aggregated; its seat may rejoin the round
            self._round_updates.pop(participant_id, None)
            self._round_messages.pop(participant_id, None)
            if self.seats is not None:
                self.seats.release(participant_id)
                self._degrade()
            self._observe(before)

    def _handle_rendezvous(self, message: Any, participant_id: str) -> Any:
        """xain's rendezvous; once a secure session has its minimum, a further seated provider is accepted
        too (selected from the next round on, or to replace a dropped one) instead of told LATER."""
        if self.seats is None or self.participants.len() < self.minimum_connected_participants:
            return super()._handle_rendezvous(message, participant_id)
        self.participants.add(participant_id)
        logger.info(
            "Accepted participant",
            participant_id=participant_id,
            current_participants_count=self.participants.len(),
        )
        return RendezvousResponse(reply=RendezvousReply.ACCEPT)

    def _degrade(self) -> None:
        """After a drop in a started session: go on with the participants left while they are at least
        ``min_participants`` (refill the round from them, and close it if the rest already reported)."""
        connected = self.participants.len()
        started = bool(self._round_started)
        if not started or self.state == State.FINISHED or connected < self.min_participants:
            return
        selected = self.round.participant_ids
        logger.warning("Degraded", participants=connected, min_participants=self.min_participants)
        self.minimum_connected_participants = min(self.minimum_connected_participants, connected)
        missing = self.minimum_participants_in_round - len(selected)
        if missing > 0:
            self.round.add_selected([p for p in self.participants.ids() if p not in selected][:missing])
        self.state = State.ROUND
        reported = [pid for pid in self.round.participant_ids if pid in self._round_messages]
        if reported and self.round.is_finished():  # the dropped one was all the round waited for
            round_, last = self.current_round, reported[-1]
            del self.round.updates[last]  # xain aggregates on an end of round: replay the last one
            self._samples = self._round_messages[last].number_samples
            Coordinator._handle_end_training_round(self, self._round_messages[last], last)
            self._close_round(round_)

    def expire_participants(self) -> None:
        """Remove participants whose heartbeat expired (xain's monitor, without its unlocked iteration)."""
        now = time.time()
        with self.lock:
            for context in list(self.participants.participants.values()):
                if context.heartbeat_expires < now:
                    logger.warning("Heartbeat expired", participant_id=context.participant_id)
                    self.remove_participant(context.participant_id, "heartbeat expired")

    def _handle_end_training_round(self, message: Any, participant_id: str) -> Any:
        round_, selected = self.current_round, participant_id in self.round.participant_ids
        try:
            self._check_end_of_round(message, participant_id)
            self._samples = message.number_samples
            if self._suspended():
                response = self._hold(message, participant_id)
            else:
                response = super()._handle_end_training_round(message, participant_id)
        except RefusedPayload as exc:
            self.refused_uploads += 1
            self._round_refused[round_] = self._round_refused.get(round_, 0) + 1
            logger.warning("Refused upload", participant_id=participant_id, round=round_, reason=str(exc))
            self.remove_participant(participant_id, f"upload refused: {exc}")
            raise
        if selected:
            self._round_updates[participant_id] = (message.number_samples, _round_metrics(message.metrics))
            self._round_messages[participant_id] = message
        if self.state == State.FINISHED or self.current_round != round_:
            self._close_round(round_)
        return response

    def _hold(self, message: Any, participant_id: str) -> EndTrainingRoundResponse:
        """xain's end of round without its aggregation: the upload, read and admitted as any other, waits in
        the suspended round (xain would aggregate the round short of its minimum)."""
        weights = self.local_weights_reader.read_weights(message.participant_id, self.current_round)
        self.round.add_updates(
            participant_id=participant_id, model_weights=weights, aggregation_data=message.number_samples
        )
        logger.info("Upload held", participant_id=participant_id, round=self.current_round)
        return EndTrainingRoundResponse()

    def _handle_start_training_round(self, message: Any, participant_id: str) -> Any:
        """xain's, also in a suspended round: a participant selected for it trains now rather than lose
        the round (the SDK does not start a round number twice)."""
        if self._suspended() and participant_id in self.round.participant_ids:
            self.state = State.ROUND  # xain's handler checks the state only
            try:
                return super()._handle_start_training_round(message, participant_id)
            finally:
                self.state = State.STANDBY
        return super()._handle_start_training_round(message, participant_id)

    def suspension(self) -> str | None:
        """Why the current round waits, when it is suspended."""
        with self.lock:
            if not self._suspended():
                return None
            held = sum(pid in self.round.updates for pid in self.round.participant_ids)
            return f"round {self.current_round} suspended since {self.last_removal}, {held} upload(s) held"

    def _close_round(self, round_: int) -> None:
        now = time.time()
        started = self._round_started.get(round_, now)
        updates = list(self._round_updates.values())
        self._round_updates, self._round_messages = {}, {}
        self.rounds_metrics.append(
            {
                "round": round_,
                "loss": _weighted(updates, "loss"),
                "accuracy": _weighted(updates, "accuracy"),
                **_evaluation(updates),
                "n_samples": sum(n for n, _ in updates),
                "train_seconds": max((m.get("train_seconds", 0.0) for _, m in updates), default=None),
                "participants": len(updates),
                "refused_uploads": self._round_refused.pop(round_, 0),
                "started": started,
                "finished": now,
                "duration": now - started,
            }
        )
        logger.info("Round finished", **self.rounds_metrics[-1])


class SessionServicer(CoordinatorGrpc):
    """xain's servicer, knowing each caller by its seat (``seats``; by peer address in a ``stock_sdk``
    session); a refused call answers PERMISSION_DENIED, a refused upload INVALID_ARGUMENT, each logged
    with its reason; a selected participant's round starts with its storage grants (``grants``)."""

    def __init__(self, coordinator: SessionCoordinator, grants: Grants | None = None) -> None:
        super().__init__(coordinator)
        self.session = coordinator
        self.grants = grants

    def _caller(self, request: Any, context: grpc.ServicerContext) -> tuple[str, str | None]:
        """``(participant id, new seat token or None)``; aborts the call when its credential is refused."""
        seats = self.session.seats
        if seats is None:
            return context.peer(), None
        metadata = dict(context.invocation_metadata())
        ticket, peer, refusals = metadata.get(TICKET_HEADER), context.peer(), self.session.refusals
        call = type(request).__name__.removesuffix("Request")
        if not seats.known(ticket) and refusals.throttled(peer):
            refusals.refuse(call, peer, THROTTLED)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"refused: {THROTTLED}")
        try:
            if isinstance(request, RendezvousRequest):
                return seats.take(ticket)
            return seats.check(ticket, metadata.get(TOKEN_HEADER)), None
        except SeatRefused as exc:
            refusals.refuse(call, peer, str(exc))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"refused: {exc}")
            raise  # unreachable: abort raises

    def Rendezvous(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        participant_id, token = self._caller(request, context)
        response = self.coordinator.on_message(request, participant_id)
        if token is not None:
            if response.reply == RendezvousReply.ACCEPT:
                context.send_initial_metadata(((TOKEN_HEADER, token),))
            else:  # a spare: the seat stays free until it is accepted
                self.session.seats.release(participant_id)
        return response

    def Heartbeat(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._on(request, context, super().Heartbeat)

    def StartTrainingRound(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._on(request, context, self._start_training_round)

    def _start_training_round(self, request: Any, context: Any) -> Any:
        """xain's handler without its ``set_Code`` typo: a start when no round the caller is selected for is
        on (a suspended one is on) is told FAILED_PRECONDITION, which our participant waits out."""
        try:
            return self.coordinator.on_message(request, context.peer())
        except UnknownParticipantError as error:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
        except InvalidRequestError as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))

    def EndTrainingRound(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            return self._on(request, context, super().EndTrainingRound)
        except RefusedPayload as exc:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details(f"upload refused: {exc}")
            return EndTrainingRoundResponse()

    def _on(self, request: Any, context: grpc.ServicerContext, handle: Any) -> Any:
        """xain's handler of ``request``, run for the caller's identity instead of its peer address."""
        participant_id, _ = self._caller(request, context)
        response = handle(request, _Identified(context, participant_id))
        selected = isinstance(request, StartTrainingRoundRequest) and context.code() is None
        if selected and self.grants is not None and participant_id in self.session.round.participant_ids:
            grants = self.grants.round_grants(participant_id)
            context.send_initial_metadata(
                tuple((f"nvfl-{k.replace('_', '-')}", v) for k, v in grants.items())
            )
        return response


class _Identified:
    """A servicer context whose ``peer()`` is the caller's identity (what xain's handlers key on)."""

    def __init__(self, context: grpc.ServicerContext, identity: str) -> None:
        self._context = context
        self._identity = identity

    def peer(self) -> str:
        return self._identity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CoordinatorService:
    """Runs one session to FINISHED (model written) or FAILED, serving gRPC and the status endpoint."""

    def __init__(self, config: SessionConfig, exchange: Exchange, weights: ndarray, tls: Tls | None) -> None:
        self.config = config
        self.exchange = exchange
        self.tls = tls
        seats = (
            Seats(config.session_id, tls.fingerprint, config.channel.seats)
            if tls and config.channel
            else None
        )
        self.coordinator = SessionCoordinator(config, exchange, weights, seats)
        self.outcome: SessionState | None = None  # FINISHED or FAILED once decided
        self.reason: str | None = None
        self.model: dict[str, str] | None = None
        self.ended_at = 0.0
        self.grpc_address = ""

    def snapshot(self) -> dict[str, Any]:
        c = self.coordinator
        with c.lock:
            running = SessionState.ROUND if c.state in (State.ROUND, State.FINISHED) else SessionState.STANDBY
            return {
                "session_id": self.config.session_id,
                "state": self.outcome or running,
                "round": c.current_round,
                "rounds": self.config.rounds,
                "rounds_completed": len(c.rounds_metrics),
                "participants": {"connected": c.participants.len(), "selected": len(c.round.participant_ids)},
                "rounds_metrics": list(c.rounds_metrics),
                "strategy": self.config.strategy.to_dict(),
                "refused_uploads": c.refused_uploads,
                "refused_calls": c.refusals.total,
                "reason": self.reason,
                "model": self.model,
                "grpc": self.grpc_address,
            }

    def _finish(self) -> None:
        c = self.coordinator
        with c.lock:
            weights, metrics = c.weights, list(c.rounds_metrics)
        if not np.isfinite(weights).all():
            self._fail("the final model is not finite")
            return
        metadata = {
            "format": "nvfl-fl-model/1",
            "session_id": self.config.session_id,
            "rounds": self.config.rounds,
            "epochs": self.config.epochs,
            "min_participants": self.config.min_participants,
            "fraction": self.config.fraction,
            "model_spec": {
                "name": self.config.model.name,
                "num_features": self.config.model.num_features,
                "num_classes": self.config.model.num_classes,
            },
            "initial_model": self.config.initial_model,
            "strategy": self.config.strategy.to_dict(),
            "rounds_metrics": metrics,
            "refused_uploads": c.refused_uploads,
            "created": time.time(),
        }
        try:
            self.model = self.exchange.write_final(models.final_arrays(self.config.model, weights), metadata)
        except Exception as exc:  # noqa: BLE001 - any storage failure ends the session as FAILED
            self._fail(f"cannot write the final model: {type(exc).__name__}: {exc}")
            return
        self._end(SessionState.FINISHED, None)

    def _fail(self, reason: str) -> None:
        logger.error("Session failed", reason=reason)
        self._end(SessionState.FAILED, reason)

    def _end(self, outcome: SessionState, reason: str | None) -> None:
        self.outcome, self.reason, self.ended_at = outcome, reason, time.monotonic()
        logger.info("Session ended", outcome=outcome, linger=self.config.linger)

    def _stall_reason(self) -> str:
        c = self.coordinator
        with c.lock:
            reason = (
                f"no progress for {self.config.stall_timeout:g}s in state {State.Name(c.state)}, round "
                f"{c.current_round}: {c.participants.len()} participant(s) connected, "
                f"{c.minimum_connected_participants} needed"
            )
            suspension = c.suspension()
        return f"{reason}; {suspension}" if suspension else reason

    def _watch(self, stop: threading.Event) -> int:
        while not stop.wait(0.05):
            self.coordinator.expire_participants()
            self.coordinator.refusals.flush()
            if self.outcome is None:
                if self.coordinator.state == State.FINISHED:
                    self._finish()
                elif time.monotonic() - self.coordinator.last_progress > self.config.stall_timeout:
                    self._fail(self._stall_reason())
            elif time.monotonic() - self.ended_at >= self.config.linger:
                return ExitCode.FINISHED if self.outcome == SessionState.FINISHED else ExitCode.FAILED
        logger.info("Stop requested", outcome=self.outcome)
        return ExitCode.FINISHED if self.outcome == SessionState.FINISHED else ExitCode.TERMINATED

    def run(self, stop: threading.Event, status_file: Path | None) -> int:
        cfg = self.config
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        grants = self.exchange if isinstance(self.exchange, Grants) else None
        servicer = SessionServicer(self.coordinator, grants)
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)
        address = f"{cfg.grpc_host}:{cfg.grpc_port}"
        try:
            if self.tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self.tls.server_credentials())
        except RuntimeError:
            port = 0
        if not port:
            raise ConfigError("grpc_port", f"a port free on {cfg.grpc_host}", cfg.grpc_port)
        try:
            context = self.tls.context if self.tls else None
            status = StatusServer(cfg.status_host, cfg.status_port, self.snapshot, context)
        except OSError as exc:
            raise ConfigError("status_port", f"a port free on {cfg.status_host}", cfg.status_port) from exc
        self.grpc_address = f"{cfg.grpc_host}:{port}"
        server.start()
        status.start()
        ready = {
            "grpc": self.grpc_address,
            "grpc_port": port,
            "status_url": f"{status.scheme}://{cfg.status_host}:{status.port}",
            "status_port": status.port,
            "pid": os.getpid(),
        }
        if status_file is not None:
            tmp = status_file.with_name(status_file.name + ".tmp")
            tmp.write_text(json.dumps(ready))
            tmp.replace(status_file)
        print(READY_PREFIX + json.dumps(ready), flush=True)
        logger.info("Coordinator serving", **ready)
        try:
            return self._watch(stop)
        finally:
            server.stop(grace=1).wait()
            status.stop()
            self.coordinator.refusals.flush(force=True)


class Tls:
    """The session's TLS key pair (files next to the config), its certificate's SHA-256 fingerprint and a
    server context with it (the status endpoint's)."""

    def __init__(self, cert: bytes, key: bytes, context: ssl.SSLContext) -> None:
        self.cert, self.key, self.context = cert, key, context
        try:
            self.fingerprint = certificate_fingerprint(cert.decode())
        except ValueError:
            raise ConfigError("channel.tls_cert", "a PEM certificate") from None

    @classmethod
    def load(cls, config: SessionConfig, directory: Path) -> Tls:
        """The key pair next to the config; ConfigError unless both are readable and belong together."""
        assert config.channel is not None
        paths = {
            "channel.tls_cert": directory / config.channel.tls_cert,
            "channel.tls_key": directory / config.channel.tls_key,
        }
        contents = []
        for name, path in paths.items():
            try:
                contents.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(
                    name, "a readable PEM file next to the config", f"{path.name} ({exc.strerror})"
                ) from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        tls = cls(*contents, context)
        try:
            context.load_cert_chain(*paths.values())
        except ssl.SSLError:
            raise ConfigError("channel.tls_key", "the PEM private key of channel.tls_cert") from None
        return tls

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)])


def _exchange(config: SessionConfig, directory: Path) -> tuple[Exchange, Tls | None]:
    """The session's storage and TLS: grants and key pair next to the config (``stock_sdk``: the bucket,
    no TLS)."""
    if config.channel is None:
        bucket = BucketExchange(config.storage)
        bucket.check()
        return bucket, None
    grants = Grants.load(config.storage, directory / config.channel.grants)
    grants.check([participant_id(seat.address) for seat in config.channel.seats])
    return grants, Tls.load(config, directory)


def _initial_weights(config: SessionConfig, exchange: Exchange) -> ndarray:
    """Round-0 weights: the warm-start model's ``weights`` array, or the model's fresh initialization."""
    fresh = models.initial_weights(config.model)
    if config.initial_model is None:
        return fresh
    try:
        arrays = load_npz(exchange.read_initial(config.initial_model), "initial_model")
    except (StorageError, RefusedPayload) as exc:
        message = str(exc)
        raise StorageError(
            message if message.startswith("initial_model") else f"initial_model: {message}"
        ) from None
    weights = arrays.get("weights")
    if weights is None or weights.ndim != 1 or weights.dtype.kind != "f":
        raise StorageError("initial_model: expected a 1-D float array 'weights' in the .npz")
    if fresh.size and weights.shape != fresh.shape:
        raise StorageError(f"initial_model: {weights.shape[0]} weights, the model needs {fresh.shape[0]}")
    return weights.astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coordinator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="session config (.json or .toml)")
    parser.add_argument("--status-file", type=Path, help="write the bound ports here as JSON")
    args = parser.parse_args(argv)
    logs.configure()
    try:
        config = load(args.config)
        exchange, tls = _exchange(config, args.config.parent)
        weights = _initial_weights(config, exchange)
    except (ConfigError, StorageError) as exc:
        print(f"coordinator: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service = CoordinatorService(config, exchange, weights, tls)
        return service.run(stop, args.status_file)
    except ConfigError as exc:
        print(f"coordinator: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
