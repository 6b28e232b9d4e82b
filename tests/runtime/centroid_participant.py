"""A custom model (``module:Class``): nearest class centroids, weights initialised by the participants in
xain's init round, then averaged every round.

    python centroid_participant.py <participant arguments> --model centroid_participant:Centroids
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy import ndarray
from xain_sdk.participant import Participant

from airflow_nevermined_fl.runtime import participant

CLASSES = 10


class Centroids(Participant):
    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.x, self.y = np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"]).astype(np.int64)

    def init_weights(self) -> ndarray:
        return np.zeros(CLASSES * self.x.shape[1])

    def train_round(self, weights: ndarray, epochs: int, epoch_base: int) -> tuple[ndarray, int]:
        own = np.stack(
            [
                self.x[self.y == c].mean(axis=0) if (self.y == c).any() else np.zeros(self.x.shape[1])
                for c in range(CLASSES)
            ]
        )
        return (0.5 * weights + 0.5 * own.ravel()), len(self.y)


if __name__ == "__main__":
    sys.exit(participant.main(sys.argv[1:]))
