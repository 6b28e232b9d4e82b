"""Models: the built-in numpy softmax regression, and loading any ``module:Class`` xain-sdk Participant.

Weights travel as one flat float vector (xain's convention); for softmax it is ``W.ravel()`` (features x
classes) followed by the bias ``b`` (classes).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np
from numpy import ndarray
from xain_sdk.participant import Participant

from airflow_nevermined_fl.runtime.config import ModelSpec


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
        self, weights: ndarray, x: ndarray, y: ndarray, rng: np.random.Generator, lr: float, batch_size: int
    ) -> ndarray:
        """One pass over ``(x, y)`` in shuffled mini-batches; returns new weights."""
        w, b = (part.copy() for part in self.split(weights))
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
            w -= lr * (xb.T @ grad)
            b -= lr * grad.sum(axis=0)
        return np.concatenate([w.ravel(), b])


def initial_weights(spec: ModelSpec) -> ndarray:
    """The coordinator's round-0 weights: zeros for softmax; empty for custom models (xain's init round)."""
    if spec.name == "softmax":
        return SoftmaxRegression(spec.num_features, spec.num_classes).init_weights()
    return np.empty(shape=(0,))


def final_arrays(spec: ModelSpec, weights: ndarray) -> dict[str, ndarray]:
    if spec.name == "softmax":
        return SoftmaxRegression(spec.num_features, spec.num_classes).arrays(weights)
    return {"weights": weights}


class SoftmaxParticipant(Participant):
    """The built-in participant: softmax regression on ``x`` (n, features) / ``y`` (n,) int labels.

    A seeded ``val_fraction`` of the shard is held out; each epoch reports ``loss`` and ``accuracy`` on it.
    """

    def __init__(
        self,
        data: dict[str, ndarray],
        num_classes: int | None = None,
        learning_rate: float = 0.5,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        seed: int = 0,
    ) -> None:
        super().__init__()
        x, y = np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"]).astype(np.int64)
        self.model = SoftmaxRegression(x.shape[1], int(num_classes or y.max() + 1))
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        n_val = int(round(len(y) * val_fraction)) if len(y) > 1 else 0
        self.x_val, self.y_val = x[order[:n_val]], y[order[:n_val]]
        self.x_train, self.y_train = x[order[n_val:]], y[order[n_val:]]
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.rng = rng

    def init_weights(self) -> ndarray:
        return self.model.init_weights()

    def train_round(self, weights: ndarray, epochs: int, epoch_base: int) -> tuple[ndarray, int]:
        for epoch in range(epochs):
            started = time.perf_counter()
            weights = self.model.sgd_epoch(
                weights, self.x_train, self.y_train, self.rng, self.learning_rate, self.batch_size
            )
            seconds = time.perf_counter() - started
            loss, accuracy = self.model.evaluate(weights, self.x_val, self.y_val)
            self.update_metrics(epoch, epoch_base, loss=loss, accuracy=accuracy, seconds=seconds)
        return weights, len(self.y_train)


def validate_data(data: dict[str, ndarray], name: str) -> None:
    """The built-in model's shard layout: ``x`` 2-D numeric, ``y`` 1-D integer labels, same length."""
    x, y = data.get("x"), data.get("y")
    if x is None or y is None:
        raise ModelError(f"{name}: expected arrays 'x' and 'y' in the .npz, found {sorted(data)}")
    if x.ndim != 2 or x.dtype.kind not in "fiu" or len(x) == 0:
        raise ModelError(f"{name}: 'x' must be a non-empty 2-D numeric array, got {x.dtype} {x.shape}")
    if y.shape != (len(x),) or y.dtype.kind not in "iu" or y.min() < 0:
        raise ModelError(f"{name}: 'y' must be {len(x)} non-negative integer labels, got {y.dtype} {y.shape}")


def load_participant_class(spec: str) -> type[Participant]:
    """``module:Class`` -> the class, which must subclass ``xain_sdk.participant.Participant``."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ModelError(f"--model: expected 'softmax' or 'module:Class', got {spec!r}")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"--model: cannot import {spec!r} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Participant)):
        raise ModelError(f"--model: {spec!r} is not a subclass of xain_sdk.participant.Participant")
    return cls


def build_participant(model: str, data: dict[str, ndarray], options: dict[str, Any]) -> Participant:
    """``softmax`` -> :class:`SoftmaxParticipant`; ``module:Class`` -> ``Class(data)``."""
    if model == "softmax":
        validate_data(data, "--data")
        classes = int(options.get("num_classes") or data.get("num_classes", data["y"].max() + 1))
        if classes <= int(data["y"].max()):
            raise ModelError(
                f"--num-classes: expected more than the largest label {data['y'].max()}, got {classes}"
            )
        return SoftmaxParticipant(data, **{**options, "num_classes": classes})
    cls = load_participant_class(model)
    try:
        return cls(data)
    except Exception as exc:  # noqa: BLE001 - the user's constructor rejected the data
        raise ModelError(f"--model: {model}(data) failed ({type(exc).__name__}: {exc})") from None
