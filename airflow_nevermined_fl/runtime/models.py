"""Models: the built-in softmax participant, and loading any ``module:Class`` xain-sdk Participant."""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np
from numpy import ndarray
from xain_sdk.participant import Participant

from airflow_nevermined_fl.runtime.config import ModelSpec
from airflow_nevermined_fl.runtime.softmax import ModelError, SoftmaxRegression, held_out, validate_data


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

    A seeded ``val_fraction`` of the shard is held out: never trained on. Each round first scores the global
    model it received on it (``global_loss``, ``global_accuracy``, ``global_rows``: the federated evaluation),
    then each epoch reports the locally trained weights' ``loss`` and ``accuracy`` on it.
    ``proximal_mu`` > 0: FedProx, each round's SGD pulled toward the global model it received.
    """

    def __init__(
        self,
        data: dict[str, ndarray],
        num_classes: int | None = None,
        learning_rate: float = 0.5,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        seed: int = 0,
        proximal_mu: float = 0.0,
    ) -> None:
        super().__init__()
        x, y = np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"]).astype(np.int64)
        self.model = SoftmaxRegression(x.shape[1], int(num_classes or y.max() + 1))
        rng = np.random.default_rng(seed)
        val, train = held_out(len(y), val_fraction, rng)
        self.x_val, self.y_val = x[val], y[val]
        self.x_train, self.y_train = x[train], y[train]
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.proximal_mu = proximal_mu
        self.rng = rng

    def init_weights(self) -> ndarray:
        return self.model.init_weights()

    def train_round(self, weights: ndarray, epochs: int, epoch_base: int) -> tuple[ndarray, int]:
        loss, accuracy = self.model.evaluate(weights, self.x_val, self.y_val)
        self.update_metrics(
            0, epoch_base, global_loss=loss, global_accuracy=accuracy, global_rows=len(self.y_val)
        )
        anchor = weights
        for epoch in range(epochs):
            started = time.perf_counter()
            weights = self.model.sgd_epoch(
                weights,
                self.x_train,
                self.y_train,
                self.rng,
                self.learning_rate,
                self.batch_size,
                self.proximal_mu,
                anchor,
            )
            seconds = time.perf_counter() - started
            loss, accuracy = self.model.evaluate(weights, self.x_val, self.y_val)
            self.update_metrics(epoch, epoch_base, loss=loss, accuracy=accuracy, seconds=seconds)
        return weights, len(self.y_train)


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
