"""Server-side strategies: how a round's aggregate becomes the next global model.

Every strategy sees only the round's aggregate, the weighted mean ``Σ nᵢ·wᵢ / Σ nᵢ`` of the uploads (what
secure aggregation reveals), and the global model it was trained from. The server optimisers step on the
pseudo-gradient ``Δ = mean − global`` as in Reddi et al. 2021, "Adaptive Federated Optimization",
Algorithm 2 (no bias correction; ``m₋₁ = 0``, ``v₋₁ = τ²``); FedAvgM (Hsu et al. 2019) with heavy-ball
momentum. FedAvg and FedProx keep the mean (FedProx's proximal term acts in the participants). Their state
(momentum, moments) is named arrays: :meth:`ServerStrategy.state` / :meth:`ServerStrategy.load`.
"""

from __future__ import annotations

import numpy as np
from numpy import ndarray

from airflow_nevermined_fl.runtime.config import StrategySpec


class ServerStrategy:
    """FedAvg (and FedProx): the next global model is the round's mean, as is."""

    def __init__(self, spec: StrategySpec) -> None:
        self.spec = spec
        self._state: dict[str, ndarray] = {}

    def step(self, global_weights: ndarray, mean: ndarray) -> ndarray:
        """The next global model from the one the round trained from and the round's mean."""
        return mean

    def _get(self, name: str, like: ndarray, initial: float = 0.0) -> ndarray:
        if name not in self._state:
            self._state[name] = np.full_like(like, initial, dtype=np.float64)
        return self._state[name]

    def state(self) -> dict[str, ndarray]:
        """The strategy's state (copies), to checkpoint."""
        return {name: value.copy() for name, value in self._state.items()}

    def load(self, state: dict[str, ndarray]) -> None:
        """Restore :meth:`state`; ValueError on an array this strategy does not keep."""
        unknown = set(state) - set(self._state_names())
        if unknown:
            raise ValueError(f"{self.spec.name}: unknown state {sorted(unknown)}")
        self._state = {name: np.asarray(value, dtype=np.float64).copy() for name, value in state.items()}

    def _state_names(self) -> tuple[str, ...]:
        return ()


class ServerOptimiser(ServerStrategy):
    """A server optimiser: a step from the global model on ``Δ = mean − global`` (the mean itself when there
    is no global model yet: a custom model's initialization round)."""

    def step(self, global_weights: ndarray, mean: ndarray) -> ndarray:
        if global_weights.size == 0 or global_weights.shape != mean.shape:
            return mean
        return self._update(global_weights, mean - global_weights)

    def _update(self, global_weights: ndarray, delta: ndarray) -> ndarray:
        raise NotImplementedError


class FedAvgM(ServerOptimiser):
    """``m = momentum·m + Δ; x = x + η·m``."""

    def _update(self, global_weights: ndarray, delta: ndarray) -> ndarray:
        o = self.spec.options
        m = self._state["m"] = o["momentum"] * self._get("m", delta) + delta
        return global_weights + o["eta"] * m

    def _state_names(self) -> tuple[str, ...]:
        return ("m",)


class FedOpt(ServerOptimiser):
    """Reddi et al.'s adaptive server optimisers: ``m = β₁·m + (1−β₁)·Δ``, ``v`` by :meth:`second_moment`,
    ``x = x + η·m / (√v + τ)``."""

    def _update(self, global_weights: ndarray, delta: ndarray) -> ndarray:
        o, beta1 = self.spec.options, self.spec.options.get("beta1", 0.0)  # FedAdagrad: 0 (m = Δ)
        m = self._state["m"] = beta1 * self._get("m", delta) + (1 - beta1) * delta
        v = self._state["v"] = self.second_moment(self._get("v", delta, o["tau"] ** 2), delta**2)
        return global_weights + o["eta"] * m / (np.sqrt(v) + o["tau"])

    def second_moment(self, v: ndarray, square: ndarray) -> ndarray:
        raise NotImplementedError

    def _state_names(self) -> tuple[str, ...]:
        return ("m", "v")


class FedAdagrad(FedOpt):
    """``v = v + Δ²`` (β₁ = 0: ``m = Δ``)."""

    def second_moment(self, v: ndarray, square: ndarray) -> ndarray:
        return v + square


class FedAdam(FedOpt):
    """``v = β₂·v + (1−β₂)·Δ²``."""

    def second_moment(self, v: ndarray, square: ndarray) -> ndarray:
        beta2 = self.spec.options["beta2"]
        return beta2 * v + (1 - beta2) * square


class FedYogi(FedOpt):
    """``v = v − (1−β₂)·Δ²·sign(v − Δ²)``."""

    def second_moment(self, v: ndarray, square: ndarray) -> ndarray:
        return v - (1 - self.spec.options["beta2"]) * square * np.sign(v - square)


_CLASSES: dict[str, type[ServerStrategy]] = {
    "fedavg": ServerStrategy,
    "fedprox": ServerStrategy,
    "fedavgm": FedAvgM,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
}


def build(spec: StrategySpec) -> ServerStrategy:
    """The server strategy of a (validated) spec."""
    return _CLASSES[spec.name](spec)
