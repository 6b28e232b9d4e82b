"""Honest seats caught in a round that another seat's refused upload suspends, for the runtime race tests.

    python race_client.py HOST:PORT CERT SPEC.json

``SPEC``: ``{"offender": TICKET, "fill": F, "early": [TICKETS], "late": [TICKETS], "held_file": PATH}``.
Every seat takes its place and waits to be selected; the ``early`` ones start their round and upload valid
weights (the global model) before the offender ends its round with every weight set to ``fill`` (refused:
it is removed, the round falls below its minimum); the ``late`` ones start theirs only after that. Then
every honest seat ends its round (1 sample), the client touches ``held_file`` and heartbeats them until the
coordinator says FINISHED or stops answering.

``SPEC`` ``{"stayed": TICKET, "dropped": TICKET}`` instead: :func:`rejoin`.

Prints one line ``NVFL_CLIENT_REPORT <json>`` and exits 0: the test judges it. Runs in the FL venv.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from channel_client import REPORT, WAIT, Client, Seat, request_for
from xain_proto.fl.coordinator_pb2 import State


def heartbeat(seat: Seat) -> dict[str, Any]:
    outcome, response, _ = seat.call("Heartbeat", request_for("Heartbeat"))
    return {**outcome, "state": State.Name(response.state) if response is not None else None}


def race(client: Client, spec: dict[str, Any]) -> dict[str, Any]:
    early = [Seat(client, ticket) for ticket in spec["early"]]
    late = [Seat(client, ticket) for ticket in spec["late"]]
    offender = Seat(client, spec["offender"])
    honest = early + late
    for seat in [*honest, offender]:
        seat.rendezvous()
    for seat in [*honest, offender]:
        seat.wait_for(State.ROUND)
    report: dict[str, Any] = {"start": {}, "end": {}, "heartbeat_after": {}}
    for seat in [*early, offender]:
        report["start"][seat.id] = seat.start_round()["code"]
        seat.upload_global(spec["fill"] if seat is offender else None)
    ended = offender.call("EndTrainingRound", request_for("EndTrainingRound", offender.id, 1))
    report["offender_end"] = ended[0]
    report["heartbeat_suspended"] = {seat.id: heartbeat(seat) for seat in honest}
    for seat in late:
        report["start"][seat.id] = seat.start_round()["code"]
        if report["start"][seat.id] == "OK":
            seat.upload_global()
    for seat in honest:
        report["end"][seat.id] = seat.call("EndTrainingRound", request_for("EndTrainingRound", seat.id, 1))[0]
        report["heartbeat_after"][seat.id] = heartbeat(seat)
    Path(spec["held_file"]).touch()
    report["last"] = keep_alive(honest)
    return report


def rejoin(client: Client, spec: dict[str, Any]) -> dict[str, Any]:
    """Two honest seats: ``dropped`` ends its round, then stops its heartbeats until the coordinator removed
    it (the round suspended: ``stayed`` told STANDBY), takes its seat again and plays the resumed round once
    more; then ``stayed`` ends the round."""
    stayed, dropped = Seat(client, spec["stayed"]), Seat(client, spec["dropped"])
    for seat in (stayed, dropped):
        seat.rendezvous()
    for seat in (stayed, dropped):
        seat.wait_for(State.ROUND)
    first = play(dropped)
    stayed.wait_for(State.STANDBY)
    dropped.rendezvous()
    dropped.wait_for(State.ROUND)
    report = {"dropped": [first, play(dropped)], "stayed": play(stayed)}
    return {**report, "last": keep_alive([stayed, dropped])}


def play(seat: Seat) -> dict[str, Any]:
    """Start the round, upload the global model, end the round (1 sample): the end's outcome."""
    seat.start_round()
    seat.upload_global()
    return seat.call("EndTrainingRound", request_for("EndTrainingRound", seat.id, 1))[0]


def keep_alive(seats: list[Seat]) -> dict[str, Any]:
    """Heartbeat every seat until the coordinator says FINISHED or a call fails; the last answer seen."""
    deadline, last = time.monotonic() + 2 * WAIT, {}
    while time.monotonic() < deadline:
        last = {seat.id: heartbeat(seat) for seat in seats}
        if any(answer["code"] != "OK" or answer["state"] == "FINISHED" for answer in last.values()):
            break
        time.sleep(0.2)
    return last


def main() -> None:
    address, cert, spec = sys.argv[1:4]
    parsed = json.loads(Path(spec).read_text())
    report = (rejoin if "dropped" in parsed else race)(Client(address, Path(cert)), parsed)
    print(REPORT + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
