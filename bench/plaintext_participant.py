"""The plaintext baseline's participant (FL venv): the stock xain-sdk client loop, plaintext gRPC, pickled
weights at the bucket root with S3 keys, running the runtime's own softmax participant and heartbeat period
(the SDK hard-codes 10 s), so that only the channel differs from a secure session's participant.

    python plaintext_participant.py HOST PORT ENDPOINT BUCKET DATA.npz HEARTBEAT SEED   (AWS_* keys in env)
"""

from __future__ import annotations

import os
import sys

import numpy as np
from xain_sdk import participant_state_machine as psm
from xain_sdk.config import Config

from airflow_nevermined_fl.runtime.models import build_participant


def main() -> None:
    host, port, endpoint, bucket, data, heartbeat, seed = sys.argv[1:8]
    psm.HEARTBEAT_TIME = float(heartbeat)  # read by the SDK's message loop at each beat
    with np.load(data, allow_pickle=False) as npz:
        shard = {key: npz[key] for key in npz.files}
    options = {"learning_rate": 0.5, "batch_size": 32, "val_fraction": 0.15, "seed": int(seed)}
    participant = build_participant("softmax", shard, {**options, "num_classes": None})
    storage = {
        "endpoint": endpoint,
        "bucket": bucket,
        "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    config = {
        "coordinator": {"host": host, "port": int(port)},
        "storage": storage,
        "logging": {"level": "info"},
    }
    psm.start_participant(participant, Config.from_unchecked_dict(config))


if __name__ == "__main__":
    main()
