"""A liar: the built-in softmax participant claiming its global model scored 1.0 on a billion held-out rows,
with a negative loss.

    python lying_participant.py <participant arguments> --model lying_participant:Liar
"""

from __future__ import annotations

import sys
from typing import Any

from numpy import ndarray

from airflow_nevermined_fl.runtime import participant
from airflow_nevermined_fl.runtime.models import SoftmaxParticipant


class Liar(SoftmaxParticipant):
    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data, num_classes=10)

    def train_round(self, weights: ndarray, epochs: int, epoch_base: int) -> tuple[ndarray, int]:
        result = super().train_round(weights, epochs, epoch_base)
        self.update_metrics(0, epoch_base, global_accuracy=1.0, global_rows=10**9, global_loss=-5.0)
        return result


if __name__ == "__main__":
    sys.exit(participant.main(sys.argv[1:]))
