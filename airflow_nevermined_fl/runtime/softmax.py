"""The built-in numpy softmax regression (no xain: Airflow tasks import it to evaluate a final model).

Weights travel as one flat float vector (xain's convention); for softmax it is ``W.ravel()`` (features x
classes) followed by the bias ``b`` (classes).
"""

from __future__ import annotations

import numpy as np
from numpy import ndarray


class ModelError(ValueError):
    """The requested model cannot be used; the message names the option."""


class SoftmaxRegression:
    """Multinomial logistic regression trained by mini-batch SGD (pure numpy)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        self.num_features = num_features
        self.num_classes = num_classes

    @property
    def size(self) -> int:
        return (self.num_features + 1) * self.num_classes

    def init_weights(self) -> ndarray:
        return np.zeros(self.size, dtype=np.float64)

    def split(self, weights: ndarray) -> tuple[ndarray, ndarray]:
        if weights.shape != (self.size,):
            raise ValueError(f"expected {self.size} softmax weights, got shape {weights.shape}")
        cut = self.num_features * self.num_classes
        return weights[:cut].reshape(self.num_features, self.num_classes), weights[cut:]

    def arrays(self, weights: ndarray) -> dict[str, ndarray]:
        """Named arrays of the final model file."""
        w, b = self.split(weights)
        return {"weights": weights, "W": w, "b": b}

    def probabilities(self, weights: ndarray, x: ndarray) -> ndarray:
        w, b = self.split(weights)
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def evaluate(self, weights: ndarray, x: ndarray, y: ndarray) -> tuple[float, float]:
        """``(cross-entropy loss, accuracy)``."""
        if len(y) == 0:
            return float("nan"), float("nan")
        proba = self.probabilities(weights, x)
        loss = -np.mean(np.log(proba[np.arange(len(y)), y] + 1e-12))
        return float(loss), float(np.mean(proba.argmax(axis=1) == y))

    def sgd_epoch(
        self,
        weights: ndarray,
        x: ndarray,
        y: ndarray,
        rng: np.random.Generator,
        lr: float,
        batch_size: int,
        mu: float = 0.0,
        anchor: ndarray | None = None,
    ) -> ndarray:
        """One pass over ``(x, y)`` in shuffled mini-batches; returns new weights. ``mu`` > 0: FedProx's
        proximal term ``mu/2·‖w − anchor‖²`` (anchor: the round's global model) joins the loss."""
        w, b = (part.copy() for part in self.split(weights))
        w0, b0 = self.split(anchor if anchor is not None else weights)
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            logits = xb @ w + b
            logits -= logits.max(axis=1, keepdims=True)
            grad = np.exp(logits)
            grad /= grad.sum(axis=1, keepdims=True)
            grad[np.arange(len(yb)), yb] -= 1.0
            grad /= len(yb)
            w -= lr * (xb.T @ grad + mu * (w - w0))
            b -= lr * (grad.sum(axis=0) + mu * (b - b0))
        return np.concatenate([w.ravel(), b])


def held_out(rows: int, fraction: float, rng: np.random.Generator) -> tuple[ndarray, ndarray]:
    """Row indices ``(held out, trained on)``: a random ``fraction`` of ``rows`` (none of a single row) that
    training never sees."""
    order = rng.permutation(rows)
    n_val = int(round(rows * fraction)) if rows > 1 else 0
    return order[:n_val], order[n_val:]


def validate_data(data: dict[str, ndarray], name: str) -> None:
    """The built-in model's shard layout: ``x`` 2-D numeric, ``y`` 1-D integer labels, same length."""
    x, y = data.get("x"), data.get("y")
    if x is None or y is None:
        raise ModelError(f"{name}: expected arrays 'x' and 'y' in the .npz, found {sorted(data)}")
    if x.ndim != 2 or x.dtype.kind not in "fiu" or len(x) == 0:
        raise ModelError(f"{name}: 'x' must be a non-empty 2-D numeric array, got {x.dtype} {x.shape}")
    if y.shape != (len(x),) or y.dtype.kind not in "iu" or y.min() < 0:
        raise ModelError(f"{name}: 'y' must be {len(x)} non-negative integer labels, got {y.dtype} {y.shape}")
