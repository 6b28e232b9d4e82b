"""Server-side strategies: the published update rules on fixed inputs, their config (validated naming the
field, at trigger time, in the gateways and in the coordinator), FedProx's proximal term, and real sessions
(coordinator and participants as FL-venv processes) with a server optimiser and with FedProx."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.devtools.session_local import start_coordinator, start_participant, wait_ended
from airflow_nevermined_fl.params import ConfError, validate_conf
from airflow_nevermined_fl.runtime import strategies
from airflow_nevermined_fl.runtime.config import ConfigError, StrategySpec, parse, strategy_spec
from airflow_nevermined_fl.runtime.softmax import SoftmaxRegression

GLOBAL = np.array([0.0, 1.0])
MEANS = [np.array([1.0, 0.5]), np.array([1.5, 0.0]), np.array([1.0, 2.0])]

# x after each of the three rounds, by hand from Reddi et al. 2021, Algorithm 2 (m₋₁ = 0, v₋₁ = τ²) and
# FedAvgM (m = β·m + Δ, x = x + η·m); e.g. FedAvgM round 2: Δ = (1.5 − 0.5, 0 − 0.75), m = 0.9·(1, −0.5) + Δ
# = (1.9, −1.2), x = (0.5, 0.75) + 0.5·m = (1.45, 0.15); FedAdagrad round 1: v = 1e-4 + 1, x = 0.1 / (√v +
# 0.01) = 0.099005.
PUBLISHED = {
    "fedavgm": ({"eta": 0.5, "momentum": 0.9}, [[0.5, 0.75], [1.45, 0.15], [2.08, 0.535]]),
    "fedadagrad": (
        {"eta": 0.1, "tau": 0.01},
        [[0.099004999875, 0.901980002], [0.179926381135, 0.81536298964], [0.222712655471, 0.890307804551]],
    ),
    "fedadam": (
        {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.01},
        [
            [0.090502831185, 0.918006425798],
            [0.216832955606, 0.798927822026],
            [0.360678459861, 0.797145932114],
        ],
    ),
    "fedyogi": (
        {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.01},
        [
            [0.090498756211, 0.918019609728],
            [0.216625463925, 0.799074187948],
            [0.359714791606, 0.797287375427],
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_server_optimisers_follow_the_published_update_rules(name: str) -> None:
    options, expected = PUBLISHED[name]
    strategy = strategies.build(StrategySpec(name, options))
    weights = GLOBAL
    for mean, want in zip(MEANS, expected, strict=True):
        weights = strategy.step(weights, mean)
        np.testing.assert_allclose(weights, want, rtol=0, atol=1e-11)


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_fedavg_and_fedprox_publish_the_mean_bit_for_bit(name: str) -> None:
    mean = np.array([0.1, 0.2, 0.30000000000000004])
    assert strategies.build(StrategySpec(name)).step(np.array([7.0, 8.0, 9.0]), mean) is mean


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_strategy_state_resumes_where_it_stopped(name: str) -> None:
    """``state()`` after round 1 loaded into a fresh strategy gives the uninterrupted rounds 2 and 3."""
    spec = StrategySpec(name, PUBLISHED[name][0])
    first = strategies.build(spec)
    weights = first.step(GLOBAL, MEANS[0])
    resumed = strategies.build(spec)
    resumed.load({key: value for key, value in first.state().items()})
    for mean, want in zip(MEANS[1:], PUBLISHED[name][1][1:], strict=True):
        weights = resumed.step(weights, mean)
        np.testing.assert_allclose(weights, want, rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="unknown state"):
        resumed.load({"velocity": np.zeros(2)})


def test_an_optimiser_leaves_a_custom_models_initialization_round_alone() -> None:
    mean = np.array([1.0, 2.0])
    assert strategies.build(StrategySpec("fedadam")).step(np.empty(0), mean) is mean


def test_defaults_are_flowers() -> None:
    assert strategy_spec(None) == StrategySpec("fedavg", {})
    assert strategy_spec({"name": "fedadam"}).to_dict() == {
        "name": "fedadam",
        "eta": 0.1,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-9,
    }
    assert strategy_spec({"name": "fedavgm", "eta": 2}).options == {"eta": 2.0, "momentum": 0.9}
    assert strategy_spec({"name": "fedprox"}).options == {"mu": 0.01}


@pytest.mark.parametrize(
    ("strategy", "field"),
    [
        ("fedadam", "strategy"),
        ({"eta": 0.1}, "strategy.name"),
        ({"name": "scaffold"}, "strategy.name"),
        ({"name": "fedadam", "eta": 0}, "strategy.eta"),
        ({"name": "fedadam", "eta": "0.1"}, "strategy.eta"),
        ({"name": "fedadam", "eta": float("nan")}, "strategy.eta"),
        ({"name": "fedyogi", "tau": float("inf")}, "strategy.tau"),
        ({"name": "fedadam", "beta2": 1.0}, "strategy.beta2"),
        ({"name": "fedavgm", "momentum": -0.1}, "strategy.momentum"),
        ({"name": "fedprox", "mu": -1}, "strategy.mu"),
        ({"name": "fedadam", "mu": 0.1}, "strategy.mu"),
        ({"name": "fedavg", "eta": True}, "strategy.eta"),
    ],
)
def test_a_bad_strategy_is_refused_naming_the_field(strategy: Any, field: str) -> None:
    """The coordinator's config parse (a consumer-written DDO's parameters), the gateways' checks and the
    session conf all refuse it, naming the field."""
    with pytest.raises(ConfigError) as caught:
        strategy_spec(strategy)
    assert caught.value.field == field
    config = {"session_id": "s", "rounds": 1, "storage": {"bucket": "nvfl"}, "stock_sdk": True}
    with pytest.raises(ConfigError, match=f"^{field}:"):
        parse({**config, "strategy": strategy})


def test_the_session_conf_validates_the_strategy_before_any_transaction() -> None:
    conf = {
        "coordinator": {"did": "did:nv:" + "aa" * 32},
        "data_providers": [{"did": f"did:nv:{i:064x}"} for i in range(1, 4)],
    }
    assert validate_conf(conf)["strategy"] == {"name": "fedavg"}
    full = validate_conf({**conf, "strategy": {"name": "fedyogi", "eta": 0.05}})
    assert full["strategy"] == {"name": "fedyogi", "eta": 0.05, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    with pytest.raises(ConfError, match=r"^conf\.strategy\.name: 'sgd' is not one of"):
        validate_conf({**conf, "strategy": {"name": "sgd"}})
    with pytest.raises(ConfError, match=r"^conf\.strategy\.beta1: expected a number in \[0, 1\)"):
        validate_conf({**conf, "strategy": {"name": "fedadam", "beta1": 1.5}})
    with pytest.raises(ConfError, match=r"^conf\.strategy\.momentum: expected a hyper-parameter of fedadam"):
        validate_conf({**conf, "strategy": {"name": "fedadam", "momentum": 0.9}})


def test_the_session_config_round_trips_its_strategy() -> None:
    config = {"session_id": "s", "rounds": 1, "storage": {"bucket": "nvfl"}, "stock_sdk": True}
    parsed = parse({**config, "strategy": {"name": "fedavgm", "momentum": 0.5}})
    assert parsed.strategy == StrategySpec("fedavgm", {"eta": 1.0, "momentum": 0.5})
    assert parse(json.loads(parsed.to_json())) == parsed
    assert parse(config).strategy.name == "fedavg"


def test_fedprox_pulls_the_local_result_toward_the_global_model(shards: dict[str, Any]) -> None:
    """Same shard, same shuffles: μ > 0 ends closer to the global weights than μ = 0, more so as μ grows."""
    with np.load(shards["providers"][0]["path"]) as npz:
        x, y = npz["x"].astype(np.float64), npz["y"].astype(np.int64)
    model = SoftmaxRegression(x.shape[1], 10)
    anchor = np.random.default_rng(1).normal(0, 0.1, model.size)

    def distance(mu: float) -> float:
        rng, weights = np.random.default_rng(0), anchor
        for _ in range(3):
            weights = model.sgd_epoch(weights, x, y, rng, 0.5, 32, mu, anchor)
        return float(np.linalg.norm(weights - anchor))

    plain, prox, strong = distance(0.0), distance(0.1), distance(1.0)
    assert strong < prox < plain
    assert model.sgd_epoch(anchor, x, y, np.random.default_rng(0), 0.5, 32) == pytest.approx(
        model.sgd_epoch(anchor, x, y, np.random.default_rng(0), 0.5, 32, 0.0, anchor)
    )


@pytest.mark.parametrize(
    "strategy", [{"name": "fedadam", "eta": 0.05}, {"name": "fedprox", "mu": 0.1}], ids=["fedadam", "fedprox"]
)
def test_a_real_session_with_a_strategy_finishes_and_names_it(
    strategy: dict[str, Any],
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    shards: dict[str, Any],
    s3_client: Any,
    seaweed: dict[str, Any],
    tmp_path: Path,
) -> None:
    coordinator = start_coordinator(make_config(strategy=strategy), tmp_path, channel=channel)
    mu = ("--proximal-mu", str(strategy["mu"])) if "mu" in strategy else ()
    procs = [coordinator.process]
    try:
        for i in range(3):
            procs.append(
                start_participant(
                    f"participant-{i}",
                    coordinator.grpc,
                    shards["providers"][i]["path"],
                    channel.pair.cert_pem,
                    channel.ticket(i),
                    tmp_path,
                    extra_args=mu,
                )
            )
        status = wait_ended(coordinator, 90)
    finally:
        for proc in procs:
            proc.stop()
    named = strategy_spec(strategy).to_dict()
    assert status["state"] == "FINISHED", status
    assert status["strategy"] == named and status["rounds_completed"] == 3
    key = status["model"]["metadata_url"].split("/", 3)[3]
    metadata = json.loads(s3_client.get_object(Bucket=seaweed["bucket"], Key=key)["Body"].read())
    assert metadata["strategy"] == named
    key = status["model"]["url"].split("/", 3)[3]
    body = s3_client.get_object(Bucket=seaweed["bucket"], Key=key)["Body"].read()
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        assert np.isfinite(npz["weights"]).all() and np.abs(npz["weights"]).max() > 0
