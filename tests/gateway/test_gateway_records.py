"""Execution records survive a gateway upgrade: a record an older version wrote still loads."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_nevermined_fl.gateway.records import Records


def test_a_record_of_an_older_gateway_loads(tmp_path: Path) -> None:
    agreement_id = "0x" + "ab" * 32
    older = {  # as the gateway before the secure channel wrote it: a "storage" field, no announcement
        "agreement_id": agreement_id,
        "service": "coordinator",
        "role": "coordinator",
        "did": "did:nv:" + "cd" * 32,
        "workflow_did": "did:nv:" + "ef" * 32,
        "consumer": "0x" + "11" * 20,
        "session_id": "s-1",
        "started": 1.0,
        "agreement": {},
        "workload": {},
        "state": "finished",
        "storage": {"url": "s3://nvfl/sessions/s-1", "endpoint_url": "http://127.0.0.1:8333"},
    }
    records = Records(tmp_path)
    (tmp_path / f"{agreement_id}.json").write_text(json.dumps(older))
    execution = records.get(agreement_id)
    assert execution is not None and execution.state == "finished" and execution.announcement is None
    records.save(execution)
    assert "storage" not in json.loads((tmp_path / f"{agreement_id}.json").read_text())
