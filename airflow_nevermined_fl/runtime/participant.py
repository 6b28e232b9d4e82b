"""Participant service: an xain-sdk 0.6 participant with a configurable heartbeat and clean exits.

Usage (in the FL runtime venv)::

    python -m airflow_nevermined_fl.runtime.participant --coordinator HOST:PORT --data PATH|s3://bucket/key \\
        --storage s3://bucket[/prefix] [--s3-endpoint URL] [--model softmax|module:Class] \\
        [--heartbeat SECONDS] [--connect-timeout SECONDS]

It speaks xain's gRPC protocol and storage layout with the SDK's own state machine (``StateRecord``,
``transit``, ``training_round``, ``InternalParticipant``); only the rendezvous and heartbeat loops are
ours, so that the period is a parameter (the SDK hard-codes ``HEARTBEAT_TIME = 10``) and an unreachable
coordinator ends the process instead of blocking it. Exit codes (:class:`~.workload.ExitCode`): 0 FINISHED,
1 session error (e.g. dropped by the coordinator), 2 bad input, 3 coordinator unreachable for
``--connect-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from numpy import ndarray
from structlog import get_logger
from xain_proto.fl.coordinator_pb2 import HeartbeatRequest, RendezvousReply, RendezvousRequest
from xain_proto.fl.coordinator_pb2_grpc import CoordinatorStub
from xain_sdk import participant_state_machine as psm
from xain_sdk.participant import InternalParticipant, Participant

from airflow_nevermined_fl.runtime import logs
from airflow_nevermined_fl.runtime.config import BUCKET, ConfigError, StorageSpec
from airflow_nevermined_fl.runtime.models import ModelError, build_participant
from airflow_nevermined_fl.runtime.safe_pickle import RefusedPayload
from airflow_nevermined_fl.runtime.storage import (
    GlobalWeightsReader,
    LocalWeightsWriter,
    SessionStorage,
    StorageError,
    client,
    get_bytes,
    load_npz,
    parse_s3_url,
)
from airflow_nevermined_fl.runtime.workload import ExitCode

logger = get_logger(__name__)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class CoordinatorUnreachable(RuntimeError):
    """No answer from the coordinator for longer than the connect timeout."""


class SessionError(RuntimeError):
    """The coordinator refused us (e.g. dropped after a missed heartbeat or a refused upload)."""


class CoordinatorLink:
    """Rendezvous and heartbeats over one channel, with our period and an unreachability deadline."""

    def __init__(self, channel: grpc.Channel, participant_id: str, heartbeat: float, timeout: float) -> None:
        self.stub = CoordinatorStub(channel)
        self.participant_id = participant_id
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.rpc_timeout = max(10.0, heartbeat)
        self.error: Exception | None = None
        self.last_ok = time.monotonic()

    def _check_reachable(self, exc: grpc.RpcError) -> None:
        if exc.code() not in RETRYABLE:
            raise SessionError(f"coordinator answered {exc.code().name}: {exc.details()}")
        if time.monotonic() - self.last_ok > self.timeout:
            raise CoordinatorUnreachable(
                f"coordinator unreachable for more than {self.timeout:g}s ({exc.code().name})"
            )

    def rendezvous(self) -> None:
        """Until accepted; a LATER reply means we wait as a spare for a free seat."""
        while True:
            try:
                response = self.stub.Rendezvous(RendezvousRequest(), timeout=self.rpc_timeout)
            except grpc.RpcError as exc:
                self._check_reachable(exc)
                time.sleep(min(self.heartbeat, 1.0))
                continue
            self.last_ok = time.monotonic()
            if response.reply == RendezvousReply.ACCEPT:
                logger.info("Rendezvous accepted", participant_id=self.participant_id)
                return
            time.sleep(self.heartbeat)

    def heartbeats(self, record: psm.StateRecord, terminate: threading.Event) -> None:
        """The SDK's message loop with our period; on a fatal error, record it and move the state to DONE."""
        while not terminate.is_set():
            state, round_ = record.lookup()
            request = HeartbeatRequest(state=psm.par_state_to_proto_state(state), round=round_)
            try:
                response = self.stub.Heartbeat(request, timeout=self.rpc_timeout)
            except grpc.RpcError as exc:
                try:
                    self._check_reachable(exc)
                except (CoordinatorUnreachable, SessionError) as error:
                    self.error = error
                    record.update(psm.ParState.DONE)
                    return
            else:
                self.last_ok = time.monotonic()
                psm.transit(state_record=record, heartbeat_response=response)
            terminate.wait(self.heartbeat)


def run(
    participant: Participant, storage: SessionStorage, address: str, heartbeat: float, timeout: float
) -> None:
    """Take part in the session at ``address`` until the coordinator says FINISHED."""
    internal = InternalParticipant(participant, LocalWeightsWriter(storage), GlobalWeightsReader(storage))
    with grpc.insecure_channel(address) as channel:
        link = CoordinatorLink(channel, participant.dummy_id, heartbeat, timeout)
        link.rendezvous()
        record = psm.StateRecord()
        terminate = threading.Event()
        loop = threading.Thread(
            target=link.heartbeats, args=(record, terminate), name="heartbeat", daemon=True
        )
        loop.start()
        try:
            # The SDK's begin_waiting/begin_training, as a loop (theirs recurses twice per round).
            while record.wait_until_selected_or_done() == psm.ParState.TRAINING:
                psm.training_round(channel, internal, record.lookup()[1])
                record.update(psm.ParState.WAITING)
        finally:
            terminate.set()
            loop.join()
        if link.error is not None:
            raise link.error


def _address(value: str) -> str:
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})", value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return number


def _storage(value: str) -> StorageSpec:
    match = re.fullmatch(rf"s3://({BUCKET})(?:/(.*))?", value)
    if not match:
        raise argparse.ArgumentTypeError(f"expected s3://bucket[/prefix], got {value!r}")
    return StorageSpec(bucket=match.group(1), prefix=match.group(2) or "")


def load_data(location: str, endpoint: str | None) -> dict[str, ndarray]:
    """The ``.npz`` shard at a local path or ``s3://bucket/key``."""
    if location.startswith("s3://"):
        bucket, key = parse_s3_url(location, "--data")
        try:
            return load_npz(get_bytes(client(endpoint), bucket, key), "--data")
        except StorageError as exc:
            raise StorageError(f"--data: {exc}") from None
    try:
        return load_npz(Path(location).read_bytes(), "--data")
    except OSError as exc:
        raise StorageError(f"--data: cannot read {location!r} ({exc.strerror})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="participant", description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", type=_address, required=True, help="coordinator gRPC HOST:PORT")
    parser.add_argument("--data", required=True, help="local .npz path or s3://bucket/key (arrays x, y)")
    parser.add_argument(
        "--storage", type=_storage, required=True, help="session storage s3://bucket[/prefix]"
    )
    parser.add_argument("--s3-endpoint", help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--model", default="softmax", help="'softmax' (built in) or module:Class")
    parser.add_argument("--heartbeat", type=_positive, default=0.5, help="heartbeat period, seconds")
    parser.add_argument("--connect-timeout", type=_positive, default=60.0, help="max seconds unreachable")
    parser.add_argument("--num-classes", type=int, help="softmax: classes (default: from the shard)")
    parser.add_argument("--learning-rate", type=_positive, default=0.5, help="softmax: SGD step")
    parser.add_argument("--batch-size", type=int, default=32, help="softmax: mini-batch size")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="softmax: local validation split")
    parser.add_argument("--seed", type=int, default=0, help="softmax: shuffling and split seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    options: dict[str, Any] = {
        "num_classes": args.num_classes,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
    }
    try:
        if args.batch_size < 1 or not 0 <= args.val_fraction < 1:
            raise ConfigError("--batch-size/--val-fraction", "batch size >= 1 and 0 <= val fraction < 1")
        storage = SessionStorage(StorageSpec(args.storage.bucket, args.storage.prefix, args.s3_endpoint))
        participant = build_participant(args.model, load_data(args.data, args.s3_endpoint), options)
        storage.check()
    except (ConfigError, StorageError, ModelError) as exc:
        print(f"participant: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    try:
        run(participant, storage, args.coordinator, args.heartbeat, args.connect_timeout)
    except CoordinatorUnreachable as exc:
        print(f"participant: error: {exc} at {args.coordinator}", file=sys.stderr, flush=True)
        return ExitCode.UNREACHABLE
    except (SessionError, RefusedPayload, grpc.RpcError) as exc:
        detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
        print(f"participant: error: session failed: {detail}", file=sys.stderr, flush=True)
        return ExitCode.FAILED
    logger.info("Session finished", participant_id=participant.dummy_id)
    return ExitCode.FINISHED


if __name__ == "__main__":
    sys.exit(main())
