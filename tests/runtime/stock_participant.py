"""A stock xain-sdk 0.6 participant: a plain ``Participant`` subclass run by the SDK's ``start_participant``.

Nothing of this project is imported: it proves wire and storage compatibility of our coordinator (in a
``stock_sdk`` session) with unmodified SDK clients (10 s heartbeat, pickled weights at the bucket root).
HEARTBEAT, when given, replaces the SDK's ``HEARTBEAT_TIME`` (and its rendezvous ``RETRY_TIMEOUT``), for
shorter sessions; nothing else changes.

    python stock_participant.py HOST PORT ENDPOINT BUCKET DATA.npz [HEARTBEAT]   (keys from AWS_* variables)
"""

from __future__ import annotations

import sys

import numpy as np
from sdk_config import sdk_config
from xain_sdk import participant_state_machine as psm
from xain_sdk.participant import Participant


class LinearSoftmax(Participant):
    """Softmax regression by full-batch gradient descent; weights = W.ravel() then b (10 classes)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        data = np.load(path)
        self.x, self.y = data["x"].astype(np.float64), data["y"].astype(np.int64)
        self.classes = 10

    def init_weights(self) -> np.ndarray:
        return np.zeros((self.x.shape[1] + 1) * self.classes)

    def train_round(self, weights: np.ndarray, epochs: int, epoch_base: int) -> tuple[np.ndarray, int]:
        features = self.x.shape[1]
        w = weights[: features * self.classes].reshape(features, self.classes).copy()
        b = weights[features * self.classes :].copy()
        for epoch in range(epochs):
            for _ in range(20):
                logits = self.x @ w + b
                proba = np.exp(logits - logits.max(axis=1, keepdims=True))
                proba /= proba.sum(axis=1, keepdims=True)
                accuracy = float(np.mean(proba.argmax(axis=1) == self.y))
                proba[np.arange(len(self.y)), self.y] -= 1.0
                w -= 1.0 * self.x.T @ proba / len(self.y)
                b -= 1.0 * proba.mean(axis=0)
            self.update_metrics(epoch, epoch_base, accuracy=accuracy)
        return np.concatenate([w.ravel(), b]), len(self.y)


def main() -> None:
    host, port, endpoint, bucket, data = sys.argv[1:6]
    if len(sys.argv) > 6:
        psm.HEARTBEAT_TIME = psm.RETRY_TIMEOUT = float(sys.argv[6])
    config = sdk_config(host, port, endpoint, bucket, logging={"level": "info"})
    psm.start_participant(LinearSoftmax(data), config)


if __name__ == "__main__":
    main()
