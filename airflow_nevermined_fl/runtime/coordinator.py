"""Coordinator service: xain-fl 0.6's ``Coordinator`` behind gRPC, with live status, safe uploads and an end.

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
import sys
import threading
import time
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
from xain_proto.fl import coordinator_pb2_grpc
from xain_proto.fl.coordinator_pb2 import EndTrainingRoundResponse, State

from airflow_nevermined_fl.runtime import logs, models
from airflow_nevermined_fl.runtime.config import ConfigError, SessionConfig, load
from airflow_nevermined_fl.runtime.safe_pickle import RefusedPayload
from airflow_nevermined_fl.runtime.status import StatusServer
from airflow_nevermined_fl.runtime.storage import (
    GlobalWeightsWriter,
    LocalWeightsReader,
    SessionStorage,
    StorageError,
    get_bytes,
    load_npz,
    parse_s3_url,
)
from airflow_nevermined_fl.runtime.workload import ExitCode, SessionState

logger = get_logger(__name__)

READY_PREFIX = "NVFL_COORDINATOR_READY "


def _round_metrics(metrics_json: str) -> dict[str, float]:
    """From an SDK metrics string (untrusted: malformed -> {}): the last epoch's ``loss``/``accuracy`` and
    ``train_seconds``, the sum of the per-epoch ``seconds`` our participants report."""
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
                elif key in {"loss", "accuracy"} and (key not in latest or epoch >= latest[key][0]):
                    latest[key] = (epoch, number)
        result = {key: value for key, (_, value) in latest.items()}
        return {**result, "train_seconds": sum(seconds)} if seconds else result
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _weighted(updates: list[tuple[int, dict[str, float]]], key: str) -> float | None:
    pairs = [(n, m[key]) for n, m in updates if key in m]
    total = sum(n for n, _ in pairs)
    if not pairs or total == 0:
        return None
    return sum(n * value for n, value in pairs) / total


class SessionCoordinator(Coordinator):
    """xain's state machine, serialized by one lock, with refused uploads, round metrics and progress time."""

    def __init__(self, config: SessionConfig, storage: SessionStorage, weights: ndarray) -> None:
        self.lock = threading.RLock()
        self.refused_uploads = 0
        self.rounds_metrics: list[dict[str, Any]] = []
        self.last_progress = time.monotonic()
        self._round_started: dict[int, float] = {}
        self._round_updates: list[tuple[int, dict[str, float]]] = []
        super().__init__(
            global_weights_writer=GlobalWeightsWriter(storage),
            local_weights_reader=LocalWeightsReader(storage, self._validate_update),
            num_rounds=config.rounds,
            minimum_participants_in_round=config.min_participants,
            fraction_of_participants=config.fraction,
            weights=weights,
            epochs=config.epochs,
            participants=Participants(
                heartbeat_time=config.heartbeat_period, heartbeat_timeout=config.heartbeat_timeout
            ),
        )

    def _validate_update(self, weights: ndarray) -> None:
        if self.weights.size:
            expected: tuple[int, ...] | None = self.weights.shape
        else:  # xain's init round: every participant's initial weights must agree with the first one
            first = next(iter(self.round.updates.values()), None)
            expected = first["model_weights"].shape if first else None
        if expected is not None and weights.shape != expected:
            raise RefusedPayload(f"weights of shape {weights.shape}, expected {expected}")
        if not np.isfinite(weights).all():
            raise RefusedPayload("weights contain NaN or infinity")

    def _fingerprint(self) -> tuple[int, int, int, int]:
        return (self.state, self.current_round, self.participants.len(), len(self.round.updates))

    def _observe(self, before: tuple[int, int, int, int]) -> None:
        if self._fingerprint() != before:
            self.last_progress = time.monotonic()
        if self.state == State.ROUND and self.current_round not in self._round_started:
            self._round_started[self.current_round] = time.time()

    def on_message(self, message: Any, participant_id: str) -> Any:
        with self.lock:
            before = self._fingerprint()
            try:
                return super().on_message(message, participant_id)
            finally:
                self._observe(before)

    def remove_participant(self, participant_id: str) -> None:
        with self.lock:
            before = self._fingerprint()
            super().remove_participant(participant_id)
            self._observe(before)

    def expire_participants(self) -> None:
        """Remove participants whose heartbeat expired (xain's monitor, without its unlocked iteration)."""
        now = time.time()
        with self.lock:
            for context in list(self.participants.participants.values()):
                if context.heartbeat_expires < now:
                    logger.warning("Heartbeat expired", participant_id=context.participant_id)
                    self.remove_participant(context.participant_id)

    def _handle_end_training_round(self, message: Any, participant_id: str) -> Any:
        round_, selected = self.current_round, participant_id in self.round.participant_ids
        try:
            response = super()._handle_end_training_round(message, participant_id)
        except RefusedPayload as exc:
            self.refused_uploads += 1
            logger.warning("Refused upload", participant_id=participant_id, round=round_, reason=str(exc))
            self.remove_participant(participant_id)
            raise
        if selected:
            self._round_updates.append((message.number_samples, _round_metrics(message.metrics)))
        if self.state == State.FINISHED or self.current_round != round_:
            self._close_round(round_)
        return response

    def _close_round(self, round_: int) -> None:
        now = time.time()
        started = self._round_started.get(round_, now)
        updates, self._round_updates = self._round_updates, []
        self.rounds_metrics.append(
            {
                "round": round_,
                "loss": _weighted(updates, "loss"),
                "accuracy": _weighted(updates, "accuracy"),
                "n_samples": sum(n for n, _ in updates),
                "train_seconds": max((m.get("train_seconds", 0.0) for _, m in updates), default=None),
                "participants": len(updates),
                "started": started,
                "finished": now,
                "duration": now - started,
            }
        )
        logger.info("Round finished", **self.rounds_metrics[-1])


class SessionServicer(CoordinatorGrpc):
    """xain's servicer; a refused upload answers INVALID_ARGUMENT instead of an unhandled error."""

    def EndTrainingRound(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            return super().EndTrainingRound(request, context)
        except RefusedPayload as exc:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details(f"upload refused: {exc}")
            return EndTrainingRoundResponse()


class CoordinatorService:
    """Runs one session to FINISHED (model written) or FAILED, serving gRPC and the status endpoint."""

    def __init__(self, config: SessionConfig, storage: SessionStorage, weights: ndarray) -> None:
        self.config = config
        self.storage = storage
        self.coordinator = SessionCoordinator(config, storage, weights)
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
                "refused_uploads": c.refused_uploads,
                "reason": self.reason,
                "model": self.model,
                "grpc": self.grpc_address,
            }

    def _finish(self) -> None:
        c = self.coordinator
        with c.lock:
            weights, metrics = c.weights, list(c.rounds_metrics)
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
            "rounds_metrics": metrics,
            "refused_uploads": c.refused_uploads,
            "created": time.time(),
        }
        try:
            self.model = self.storage.write_final(models.final_arrays(self.config.model, weights), metadata)
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
            return (
                f"no progress for {self.config.stall_timeout:g}s in state {State.Name(c.state)}, round "
                f"{c.current_round}: {c.participants.len()} participant(s) connected, "
                f"{c.minimum_connected_participants} needed"
            )

    def _watch(self, stop: threading.Event) -> int:
        while not stop.wait(0.05):
            self.coordinator.expire_participants()
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
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(SessionServicer(self.coordinator), server)
        try:
            port = server.add_insecure_port(f"{cfg.grpc_host}:{cfg.grpc_port}")
        except RuntimeError:
            port = 0
        if not port:
            raise ConfigError("grpc_port", f"a port free on {cfg.grpc_host}", cfg.grpc_port)
        try:
            status = StatusServer(cfg.status_host, cfg.status_port, self.snapshot)
        except OSError as exc:
            raise ConfigError("status_port", f"a port free on {cfg.status_host}", cfg.status_port) from exc
        self.grpc_address = f"{cfg.grpc_host}:{port}"
        server.start()
        status.start()
        ready = {
            "grpc": self.grpc_address,
            "grpc_port": port,
            "status_url": f"http://{cfg.status_host}:{status.port}",
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


def _initial_weights(config: SessionConfig, storage: SessionStorage) -> ndarray:
    """Round-0 weights: the warm-start model's ``weights`` array, or the model's fresh initialization."""
    fresh = models.initial_weights(config.model)
    if config.initial_model is None:
        return fresh
    bucket, key = parse_s3_url(config.initial_model, "initial_model")
    try:
        arrays = load_npz(get_bytes(storage.s3, bucket, key), "initial_model")
    except (StorageError, RefusedPayload) as exc:
        raise StorageError(f"initial_model: {exc}") from None
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
        storage = SessionStorage(config.storage)
        storage.check()
        weights = _initial_weights(config, storage)
    except (ConfigError, StorageError) as exc:
        print(f"coordinator: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service = CoordinatorService(config, storage, weights)
        return service.run(stop, args.status_file)
    except ConfigError as exc:
        print(f"coordinator: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
