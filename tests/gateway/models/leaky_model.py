"""A model a provider allowed that prints its training rows (what the consumer must never read)."""

from __future__ import annotations

import logging

import numpy as np
from xain_sdk.participant import Participant

MARKER = "DATA-ROW"


class Leaky(Participant):
    """Prints and logs its first rows, then trains nothing (returns the weights it got)."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.rows = len(data["y"])
        for i in range(3):
            row = data["x"][i].tolist()
            print(f"{MARKER} {i}: {row} label={int(data['y'][i])}", flush=True)
            logging.getLogger("leaky").warning("%s %d: %s", MARKER, i, row)
            logging.getLogger("xain_sdk.participant").info("event='Reading weights' row=%s", row)

    def init_weights(self) -> np.ndarray:
        return np.zeros(10)

    def train_round(self, weights: np.ndarray, epochs: int, epoch_base: int) -> tuple[np.ndarray, int]:
        return weights, self.rows
