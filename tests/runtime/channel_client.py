"""A misbehaving or probing session client, for the channel tests: xain's gRPC protocol over the session's
TLS channel (pinned to the session certificate, like our participant), seat metadata set by hand.

    python channel_client.py probes     HOST:PORT CERT PROBES.json
    python channel_client.py end-rounds HOST:PORT CERT TICKET_FILE ATTEMPTS.json
    python channel_client.py scope      HOST:PORT CERT TICKET_FILE TARGETS.json
    python channel_client.py interleave HOST:PORT CERT TICKETS.json

``probes``: one call per probe (``{"case", "call", "ticket", "token", ...}``; absent: no such header).
``end-rounds``: per attempt (``{"case", "upload_id", "number_samples", "wait_for_file", "fill"}``;
upload_id None: its own), take the seat, wait to be selected, start the round, upload valid weights with its
grant (with ``fill``: all set to that finite value), (wait for the file,) end the round as told, then
one heartbeat (refused once the coordinator removed it).
``scope``: take the seat, wait to be selected, start the round, read the grants the coordinator sends and try
storage requests outside them (``TARGETS``: ``bucket`` and paths ``/bucket/key`` of objects that are not its
own), then finish the session honestly (its upload: the global model, 1 sample).
``interleave``: two seats (``{"honest", "offender"}`` tickets), see :func:`interleave`.

Prints one line ``NVFL_CLIENT_REPORT <json>``, without any credential, and exits 0: the test judges it.
Runs in the FL venv (run it with ``RuntimeProcess`` and ``runtime_env``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import numpy as np
import requests
from xain_proto.fl.coordinator_pb2 import (
    EndTrainingRoundRequest,
    HeartbeatRequest,
    RendezvousReply,
    RendezvousRequest,
    StartTrainingRoundRequest,
    State,
)
from xain_proto.fl.coordinator_pb2_grpc import CoordinatorStub

from airflow_nevermined_fl.runtime.channel import TICKET_HEADER, TLS_NAME, TOKEN_HEADER, participant_id

REPORT = "NVFL_CLIENT_REPORT "
PROBE_BODY = b"NVFL-SCOPE-PROBE: this object was written outside the writer's grant"
WAIT = 60.0


class Client:
    """Calls on one TLS channel, with the seat headers given per call."""

    def __init__(self, address: str, cert: Path) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        options = [("grpc.ssl_target_name_override", TLS_NAME)]
        self.channel = grpc.secure_channel(address, credentials, options=options)
        self.stub = CoordinatorStub(self.channel)

    def call(
        self, name: str, request: Any, ticket: str | None = None, token: str | None = None
    ) -> tuple[dict[str, Any], Any, dict[str, str]]:
        """``(outcome, response or None, initial metadata)``; outcome: the call, its status code, details."""
        metadata = []
        if ticket is not None:
            metadata.append((TICKET_HEADER, ticket))
        if token is not None:
            metadata.append((TOKEN_HEADER, token))
        try:
            response, rpc = getattr(self.stub, name).with_call(request, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return {"call": name, "code": exc.code().name, "details": exc.details() or ""}, None, {}
        received = dict(rpc.initial_metadata() or ())
        return {"call": name, "code": "OK", "details": ""}, response, received


def request_for(call: str, upload_id: str = "", number_samples: int = 1) -> Any:
    return {
        "Rendezvous": RendezvousRequest,
        "Heartbeat": lambda: HeartbeatRequest(state=State.READY, round=-1),
        "StartTrainingRound": StartTrainingRoundRequest,
        "EndTrainingRound": lambda: EndTrainingRoundRequest(
            participant_id=upload_id, number_samples=number_samples, metrics="[]"
        ),
    }[call]()


class Seat:
    """A seat taken honestly: the ticket, the token the rendezvous returned, the round's grants."""

    def __init__(self, client: Client, ticket: str) -> None:
        self.client = client
        self.ticket = ticket
        self.id = participant_id(ticket.partition(".")[0])
        self.token: str | None = None
        self.grants: dict[str, str] = {}

    def call(self, name: str, request: Any) -> tuple[dict[str, Any], Any, dict[str, str]]:
        return self.client.call(name, request, self.ticket, self.token)

    def rendezvous(self) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            outcome, response, metadata = self.call("Rendezvous", RendezvousRequest())
            if outcome["code"] != "OK":
                raise RuntimeError(f"rendezvous refused: {outcome}")
            if response.reply == RendezvousReply.ACCEPT:
                self.token = metadata[TOKEN_HEADER]
                return
            time.sleep(0.2)
        raise TimeoutError("not accepted")

    def wait_for(self, state: int) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            outcome, response, _ = self.call("Heartbeat", request_for("Heartbeat"))
            if outcome["code"] != "OK":
                raise RuntimeError(f"heartbeat refused: {outcome}")
            if response.state == state:
                return
            time.sleep(0.2)
        raise TimeoutError(f"not in state {State.Name(state)}")

    def start_round(self) -> dict[str, Any]:
        outcome, _, metadata = self.call("StartTrainingRound", StartTrainingRoundRequest())
        self.grants = {k: v for k, v in metadata.items() if k.startswith("nvfl-")}
        return {**outcome, "grants": sorted(self.grants)}

    def upload_global(self, fill: float | None = None) -> dict[str, Any]:
        """Read the global model with the grant and write it back as this seat's upload (valid weights; with
        ``fill``: every weight set to it)."""
        got = requests.get(self.grants["nvfl-global-url"], timeout=30)
        upload = got.content
        if fill is not None:
            buffer = io.BytesIO()
            np.save(buffer, np.full_like(np.load(io.BytesIO(got.content)), fill, dtype=np.float64))
            upload = buffer.getvalue()
        put = _post(json.loads(self.grants["nvfl-upload-form"]), upload)
        digest_ok = hashlib.sha256(got.content).hexdigest() == self.grants.get("nvfl-global-sha256")
        return {"get_global": got.status_code, "digest_ok": digest_ok, "put_upload": put.status_code}


def probes(client: Client, spec: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for probe in spec:
        request = request_for(probe["call"], probe.get("upload_id", ""), probe.get("number_samples", 1))
        outcome, _, metadata = client.call(probe["call"], request, probe.get("ticket"), probe.get("token"))
        results.append({"case": probe["case"], **outcome, "token_granted": TOKEN_HEADER in metadata})
    return results


def end_rounds(client: Client, ticket: str, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for attempt in attempts:
        seat = Seat(client, ticket)
        seat.rendezvous()
        seat.wait_for(State.ROUND)
        started = seat.start_round()
        uploaded = seat.upload_global(attempt.get("fill"))
        if attempt.get("wait_for_file"):  # the test says when
            _wait_for_file(Path(attempt["wait_for_file"]))
        upload_id = attempt["upload_id"] or seat.id
        end = request_for("EndTrainingRound", upload_id, attempt["number_samples"])
        ended, _, _ = seat.call("EndTrainingRound", end)
        after, _, _ = seat.call("Heartbeat", request_for("Heartbeat"))
        results.append(
            {"case": attempt["case"], "start": started, **uploaded, "end": ended, "heartbeat_after": after}
        )
    return results


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path}")
        time.sleep(0.05)


def _edited(url: str, path: str | None = None) -> str:
    """``url`` (a grant) with its path replaced, the signature kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path if path is not None else parts.path))


def _anonymous(url: str, path: str) -> str:
    """The object at ``path`` on ``url``'s endpoint, no signature at all."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _probe(name: str, method: str, url: str, in_scope: bool = False, body: bytes | None = None) -> Any:
    response = requests.request(method, url, data=body, timeout=30)
    return {"name": name, "method": method, "status": response.status_code, "in_scope": in_scope}, response


def _post(form: dict[str, Any], body: bytes, **edits: str) -> requests.Response:
    """A POST with a presigned POST grant ``form``, its fields edited by ``edits``."""
    fields = {**form["fields"], **edits}
    return requests.post(form["url"], data=fields, files={"file": ("upload.npy", body)}, timeout=30)


def _post_probe(name: str, form: dict[str, Any], body: bytes, in_scope: bool = False, **edits: str) -> Any:
    return {
        "name": name,
        "method": "POST",
        "status": _post(form, body, **edits).status_code,
        "in_scope": in_scope,
    }


def _key(path: str) -> str:
    """The object key of ``/bucket/key``."""
    return path.lstrip("/").partition("/")[2]


def _widened(form: dict[str, Any], max_bytes: int) -> str:
    """The grant's policy with its size bound raised to ``max_bytes`` (its signature kept)."""
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    policy["conditions"] = [
        ["content-length-range", 1, max_bytes]
        if isinstance(c, list) and c[0] == "content-length-range"
        else c
        for c in policy["conditions"]
    ]
    return base64.b64encode(json.dumps(policy).encode()).decode()


def scope(client: Client, ticket: str, targets: dict[str, str]) -> dict[str, Any]:
    """What a participant can reach in storage with what it is given; then the session, played honestly."""
    seat = Seat(client, ticket)
    seat.rendezvous()
    seat.wait_for(State.ROUND)
    started = seat.start_round()
    get_global, upload = seat.grants["nvfl-global-url"], json.loads(seat.grants["nvfl-upload-form"])
    global_path = urlsplit(get_global).path
    other_upload, other_data = targets["other_upload"], targets["other_data"]
    outside = [  # (what, method, URL): none of it is granted
        ("anonymous GET: another provider's data", "GET", _anonymous(get_global, other_data)),
        ("anonymous GET: another participant's upload", "GET", _anonymous(get_global, other_upload)),
        ("anonymous GET: the global model", "GET", _anonymous(get_global, global_path)),
        ("anonymous GET: the bucket's listing", "GET", _anonymous(get_global, f"/{targets['bucket']}")),
        ("anonymous PUT: another participant's upload", "PUT", _anonymous(get_global, other_upload)),
        ("anonymous PUT: the global model", "PUT", _anonymous(get_global, global_path)),
        ("global GET grant, key edited: another provider's data", "GET", _edited(get_global, other_data)),
        ("global GET grant, key edited: another's upload", "GET", _edited(get_global, other_upload)),
        ("global GET grant as PUT: the global model", "PUT", get_global),
    ]
    made = [
        _probe(name, method, url, body=PROBE_BODY if method == "PUT" else None)[0]
        for name, method, url in outside
    ]
    made += [
        _post_probe(
            "upload POST grant, key edited: another's upload", upload, PROBE_BODY, key=_key(other_upload)
        ),
        _post_probe(
            "upload POST grant, key edited: the global model", upload, PROBE_BODY, key=_key(global_path)
        ),
        _post_probe(
            "upload POST grant, size bound edited: its own upload",
            upload,
            PROBE_BODY,
            policy=_widened(upload, 1 << 30),
        ),
    ]
    # Its own grants work: read the global model (the digest announced), write its own upload with it;
    # the upload grant refuses a body 100 times the model's size.
    result, got = _probe("global GET grant: the global model", "GET", get_global, in_scope=True)
    made.append(result)
    digest_ok = hashlib.sha256(got.content).hexdigest() == seat.grants.get("nvfl-global-sha256")
    oversize = _post(upload, PROBE_BODY * (100 * len(got.content) // len(PROBE_BODY) + 1))
    made.append(_post_probe("upload POST grant: its own upload", upload, got.content, True))
    ended, _, _ = seat.call("EndTrainingRound", request_for("EndTrainingRound", seat.id, 1))
    seat.wait_for(State.FINISHED)
    credential_like = ("AWS", "KEY", "SECRET", "TOKEN", "PASSWORD")
    return {
        "participant_id": seat.id,
        "own_upload_path": f"{urlsplit(upload['url']).path}/{upload['fields']['key']}",
        "oversize": {"bytes": 100 * len(got.content), "status": oversize.status_code, "body": oversize.text},
        "start": started,
        "requests": made,
        "digest_ok": digest_ok,
        "end": ended,
        "credential_env": sorted(key for key in os.environ if any(word in key for word in credential_like)),
    }


def interleave(client: Client, tickets: dict[str, str]) -> dict[str, Any]:
    """Two seats: both selected; the offender's end of round is refused (it is removed: the coordinator
    falls back to STANDBY) after the other learned from its heartbeat that it was selected but before it
    starts its round. What does that StartTrainingRound get?"""
    honest, offender = Seat(client, tickets["honest"]), Seat(client, tickets["offender"])
    honest.rendezvous()
    offender.rendezvous()
    honest.wait_for(State.ROUND)
    offender.wait_for(State.ROUND)
    offender.start_round()
    ended, _, _ = offender.call("EndTrainingRound", request_for("EndTrainingRound", honest.id, 1))
    started = honest.start_round()
    return {"offender_end": ended, "honest_start": started}


def main() -> None:
    mode, address, cert, *files = sys.argv[1:]
    client = Client(address, Path(cert))
    if mode == "probes":
        report: Any = probes(client, json.loads(Path(files[0]).read_text()))
    elif mode == "interleave":
        report = interleave(client, json.loads(Path(files[0]).read_text()))
    else:
        ticket, spec = Path(files[0]).read_text().strip(), json.loads(Path(files[1]).read_text())
        report = end_rounds(client, ticket, spec) if mode == "end-rounds" else scope(client, ticket, spec)
    print(REPORT + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
