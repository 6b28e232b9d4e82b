"""Participant service: an xain-sdk 0.6 participant on the secure session channel, with clean exits.

Usage (in the FL runtime venv)::

    python -m airflow_nevermined_fl.runtime.participant --coordinator HOST:PORT --coordinator-cert FILE \\
        --seat-file FILE (--data PATH | --data-url-file FILE) [--model softmax|module:Class] \\
        [--heartbeat SECONDS] [--connect-timeout SECONDS]

It speaks xain's gRPC protocol with the SDK's own state machine (``StateRecord``, ``transit``,
``training_round``, ``InternalParticipant``) over TLS, trusting only the session certificate its gateway
took from the coordinator's signed announcement, and sends its seat credential with every call
(:mod:`.channel`). It holds no storage key: each round's grants (read the global model, write its upload)
come with the coordinator's ``StartTrainingRound`` answer; the global model is checked against the digest
they carry and the model's shape before use. Its data is a local ``.npz`` or a granted URL (the URL, a
credential, in a file). The rendezvous and heartbeat loops are ours, so that the period is a parameter (the
SDK hard-codes ``HEARTBEAT_TIME = 10``) and an unreachable coordinator ends the process instead of blocking
it. Exit codes (:class:`~.workload.ExitCode`): 0 FINISHED, 1 session error (e.g. refused or dropped by the
coordinator, or a coordinator whose certificate is not the published one), 2 bad input, 3 coordinator
unreachable for ``--connect-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from numpy import ndarray
from structlog import get_logger
from xain_proto.fl.coordinator_pb2 import HeartbeatRequest, RendezvousReply, RendezvousRequest
from xain_proto.fl.coordinator_pb2_grpc import CoordinatorStub
from xain_sdk import participant_state_machine as psm
from xain_sdk.participant import InternalParticipant, Participant

from airflow_nevermined_fl.runtime import arrays, logs
from airflow_nevermined_fl.runtime.arrays import ArraySpec, RefusedPayload
from airflow_nevermined_fl.runtime.channel import (
    TICKET_HEADER,
    TLS_NAME,
    TOKEN_HEADER,
    certificate_fingerprint,
    participant_id,
)
from airflow_nevermined_fl.runtime.config import ConfigError
from airflow_nevermined_fl.runtime.models import ModelError, build_participant
from airflow_nevermined_fl.runtime.storage import StorageError, byte_limit, http_get, http_post, load_npz
from airflow_nevermined_fl.runtime.workload import UPLOAD_ACCEPTED, ExitCode

logger = get_logger(__name__)

RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # the coordinator throttles a host after many refused calls
)


class CoordinatorUnreachable(RuntimeError):
    """No answer from the coordinator for longer than the connect timeout."""


class SessionError(RuntimeError):
    """The coordinator refused us (e.g. dropped after a missed heartbeat or a refused upload)."""


def _tls_refused(exc: grpc.RpcError) -> bool:
    details = (exc.details() or "").upper()
    return "CERTIFICATE_VERIFY_FAILED" in details or "HANDSHAKE" in details


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")
    ),
    grpc.ClientCallDetails,
):
    pass


class Seat(grpc.UnaryUnaryClientInterceptor):
    """The participant's side of its seat: the ticket (and, once seated, the token) on every call; the
    round's storage grants from each ``StartTrainingRound`` answer."""

    def __init__(self, ticket: str) -> None:
        self.ticket = ticket
        self.token: str | None = None
        self.grants: dict[str, str] = {}
        self.participant_id = participant_id(ticket.partition(".")[0])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), (TICKET_HEADER, self.ticket)]
        if self.token:
            metadata.append((TOKEN_HEADER, self.token))
        call = continuation(
            _CallDetails(
                details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
            ),
            request,
        )
        if call.code() == grpc.StatusCode.OK:
            received = dict(call.initial_metadata() or ())
            self.token = received.get(TOKEN_HEADER, self.token)
            if "nvfl-global-url" in received:
                self.grants = {
                    k.removeprefix("nvfl-"): v for k, v in received.items() if k.startswith("nvfl-")
                }
        return call

    def grant(self, name: str) -> str:
        if name not in self.grants:
            raise StorageError(f"{name}: the coordinator granted none for this round")
        return self.grants[name]


class GrantedGlobalReader:
    """The round's global model, through its grant: the bytes must match the digest the coordinator sent
    and decode to an array of the model's shape (``shape`` None: a custom model's, any 1-D)."""

    def __init__(self, seat: Seat, shape: tuple[int, ...] | None) -> None:
        self.seat = seat
        self.spec = ArraySpec(shape=shape)

    def read_weights(self, round: int) -> ndarray:  # noqa: A002 - xain's signature
        data = http_get(self.seat.grant("global-url"), "global model", byte_limit(self.spec))
        if hashlib.sha256(data).hexdigest() != self.seat.grant("global-sha256"):
            raise RefusedPayload(f"global model of round {round} does not match the coordinator's digest")
        return arrays.decode(data, self.spec, byte_limit(self.spec))


class GrantedUploadWriter:
    """This participant's upload, through the round's grant."""

    def __init__(self, seat: Seat) -> None:
        self.seat = seat

    def write_weights(self, participant_id: str, round: int, weights: ndarray) -> None:  # noqa: A002
        body = arrays.encode(np.asarray(weights, dtype=np.float64))
        http_post(self.seat.grant("upload-form"), "upload", body)


class _SdkChannel:
    """An intercepted channel as the SDK's helpers take it: they log ``channel._channel.target()``."""

    def __init__(self, intercepted: grpc.Channel, secure: grpc.Channel) -> None:
        self._intercepted = intercepted
        self._channel = secure._channel  # type: ignore[attr-defined]  # the core channel, with target()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._intercepted, name)


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
        if _tls_refused(exc):
            raise SessionError("the coordinator's TLS certificate is not the one published for this session")
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
    participant: Participant, seat: Seat, cert: bytes, address: str, heartbeat: float, timeout: float
) -> None:
    """Take part in the session at ``address`` (its certificate ``cert``) until the coordinator says
    FINISHED."""
    participant.dummy_id = seat.participant_id  # the upload the end of each round names
    model = getattr(participant, "model", None)
    shape = (model.size,) if model is not None and hasattr(model, "size") else None
    internal = InternalParticipant(participant, GrantedUploadWriter(seat), GrantedGlobalReader(seat, shape))
    credentials = grpc.ssl_channel_credentials(root_certificates=cert)
    options = [("grpc.ssl_target_name_override", TLS_NAME)]
    with grpc.secure_channel(address, credentials, options=options) as secure:
        channel = _SdkChannel(grpc.intercept_channel(secure, seat), secure)
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
                round_ = record.lookup()[1]
                try:
                    psm.training_round(channel, internal, round_)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    logger.info("Round called off by the coordinator", reason=exc.details())
                else:  # the coordinator answered the end of round: the upload is in
                    print(f"{UPLOAD_ACCEPTED} {round_}", flush=True)
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


def _non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return number


def _secret(path: Path, name: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(name, "a readable file", f"{path} ({exc.strerror})") from None
    if not value:
        raise ConfigError(name, "a non-empty file", str(path))
    return value


def _ticket(text: str) -> str:
    if not re.fullmatch(r"0x[0-9a-f]{40}\.[0-9a-f]{130}", text):
        raise ConfigError("--seat-file", "a seat ticket (<address>.<signature>) from the provider's gateway")
    return text


def _certificate(text: str) -> bytes:
    try:
        certificate_fingerprint(text)
    except ValueError:
        raise ConfigError("--coordinator-cert", "a PEM certificate") from None
    return text.encode()


def load_data(path: Path | None, url_file: Path | None) -> dict[str, ndarray]:
    """The ``.npz`` shard at a local path, or at the granted URL written in ``url_file``."""
    if url_file is not None:
        return load_npz(http_get(_secret(url_file, "--data-url-file"), "--data-url-file"), "--data-url-file")
    assert path is not None
    try:
        return load_npz(path.read_bytes(), "--data")
    except OSError as exc:
        raise StorageError(f"--data: cannot read {str(path)!r} ({exc.strerror})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="participant", description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", type=_address, required=True, help="coordinator gRPC HOST:PORT")
    parser.add_argument(
        "--coordinator-cert", type=Path, required=True, help="the session's certificate (PEM) to trust"
    )
    parser.add_argument("--seat-file", type=Path, required=True, help="file holding the seat credential")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="local .npz path (arrays x, y)")
    data.add_argument("--data-url-file", type=Path, help="file holding a granted URL of the .npz")
    parser.add_argument("--model", default="softmax", help="'softmax' (built in) or module:Class")
    parser.add_argument("--heartbeat", type=_positive, default=0.5, help="heartbeat period, seconds")
    parser.add_argument("--connect-timeout", type=_positive, default=60.0, help="max seconds unreachable")
    parser.add_argument("--num-classes", type=int, help="softmax: classes (default: from the shard)")
    parser.add_argument("--learning-rate", type=_positive, default=0.5, help="softmax: SGD step")
    parser.add_argument("--batch-size", type=int, default=32, help="softmax: mini-batch size")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="softmax: local validation split")
    parser.add_argument("--seed", type=int, default=0, help="softmax: shuffling and split seed")
    parser.add_argument(
        "--proximal-mu", type=_non_negative, default=0.0, help="softmax: FedProx's proximal term (0: none)"
    )
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
        "proximal_mu": args.proximal_mu,
    }
    try:
        if args.batch_size < 1 or not 0 <= args.val_fraction < 1:
            raise ConfigError("--batch-size/--val-fraction", "batch size >= 1 and 0 <= val fraction < 1")
        seat = Seat(_ticket(_secret(args.seat_file, "--seat-file")))
        cert = _certificate(_secret(args.coordinator_cert, "--coordinator-cert"))
        participant = build_participant(args.model, load_data(args.data, args.data_url_file), options)
    except (ConfigError, StorageError, ModelError) as exc:
        print(f"participant: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BAD_INPUT
    try:
        run(participant, seat, cert, args.coordinator, args.heartbeat, args.connect_timeout)
    except CoordinatorUnreachable as exc:
        print(f"participant: error: {exc} at {args.coordinator}", file=sys.stderr, flush=True)
        return ExitCode.UNREACHABLE
    except (SessionError, RefusedPayload, StorageError, grpc.RpcError) as exc:
        detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
        print(f"participant: error: session failed: {detail}", file=sys.stderr, flush=True)
        return ExitCode.FAILED
    logger.info("Session finished", participant_id=participant.dummy_id)
    return ExitCode.FINISHED


if __name__ == "__main__":
    sys.exit(main())
