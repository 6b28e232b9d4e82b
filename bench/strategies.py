"""Server-side strategies on the digits split: the global model's accuracy per round on held-out test rows.

For each split (IID; Dirichlet α = 0.1) at 10 providers and each seed (``nvfl data partition``'s seed, as
``nvfl session local`` uses it), every strategy (and its server learning rates) trains 10 rounds of 3 local
epochs with the built-in participant (``SoftmaxParticipant``: its seeds, SGD and validation split as in a
session: participant ``i`` seeded ``seed + i``) and the runtime's own aggregation: the weighted mean (float64)
then :mod:`airflow_nevermined_fl.runtime.strategies`. The session's arithmetic without its processes, so a
sweep takes seconds; ``--sessions`` also runs real bare sessions (``nvfl session local``: coordinator and 10
participants as processes, needs ``nvfl devstack up``) for FedAvg and the best strategy on the α = 0.1 split,
seed 0, and reports their final accuracy beside this engine's. The ceiling: central training (the same SGD
for as many epochs, 30) on all providers' rows together, scored on the same test rows.

Prints a JSON report and a markdown table (median over seeds of the accuracy at rounds 1, 5 and 10).

    .venv-fl/bin/python bench/strategies.py [--seeds 5] [--rounds 10] [--sessions] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.runtime import strategies
from airflow_nevermined_fl.runtime.config import StrategySpec
from airflow_nevermined_fl.runtime.models import SoftmaxParticipant
from airflow_nevermined_fl.runtime.softmax import SoftmaxRegression

PROVIDERS, EPOCHS = 10, 3
SPLITS = {"iid": ("iid", 0.5), "alpha=0.1": ("non-iid", 0.1)}
CANDIDATES: list[dict[str, Any]] = [
    {"name": "fedavg"},
    {"name": "fedprox", "mu": 0.01},
    {"name": "fedprox", "mu": 0.1},
    {"name": "fedavgm"},
    {"name": "fedavgm", "momentum": 0.5},
    {"name": "fedavgm", "eta": 0.5},
    *[{"name": name, "eta": eta} for name in ("fedadagrad", "fedadam", "fedyogi") for eta in (1.0, 0.3, 0.1)],
    {"name": "fedyogi"},  # Flower's default eta 0.01
    {"name": "fedavgm", "eta": 2.0, "momentum": 0.7},  # the best of a sweep (docs/runtime.md)
    {"name": "fedadam", "eta": 0.2, "tau": 1e-3},
    {"name": "fedyogi", "eta": 0.5, "tau": 1e-2},
]


def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def simulate(manifest: dict[str, Any], strategy: dict[str, Any], rounds: int, seed: int) -> list[float]:
    """The global model's test accuracy after each round of a session with ``strategy``."""
    spec = StrategySpec(strategy["name"], {k: float(v) for k, v in strategy.items() if k != "name"})
    server, classes = strategies.build(spec), manifest["num_classes"]
    participants = [
        SoftmaxParticipant(_load(p["path"]), classes, seed=seed + i, proximal_mu=spec.options.get("mu", 0.0))
        for i, p in enumerate(manifest["providers"])
    ]
    test = _load(manifest["test"]["path"])
    model = SoftmaxRegression(manifest["num_features"], classes)
    weights, curve = model.init_weights(), []
    for round_ in range(rounds):
        updates = [p.train_round(weights, EPOCHS, round_ * EPOCHS) for p in participants]
        total = sum(n for _, n in updates)
        mean = sum(w.astype(np.float64) * n for w, n in updates) / total
        weights = server.step(weights, mean)
        curve.append(model.evaluate(weights, test["x"].astype(np.float64), test["y"])[1])
    return curve


def central(manifest: dict[str, Any], epochs: int, seed: int) -> float:
    """All providers' rows trained together by the same SGD, scored on the test rows."""
    shards = [_load(p["path"]) for p in manifest["providers"]]
    x = np.concatenate([s["x"] for s in shards]).astype(np.float64)
    y = np.concatenate([s["y"] for s in shards]).astype(np.int64)
    model, rng = (
        SoftmaxRegression(manifest["num_features"], manifest["num_classes"]),
        np.random.default_rng(seed),
    )
    weights = model.init_weights()
    for _ in range(epochs):
        weights = model.sgd_epoch(weights, x, y, rng, 0.5, 32)
    test = _load(manifest["test"]["path"])
    return model.evaluate(weights, test["x"].astype(np.float64), test["y"])[1]


def label(strategy: dict[str, Any]) -> str:
    options = ", ".join(f"{k}={v:g}" for k, v in strategy.items() if k != "name")
    return f"{strategy['name']}({options})" if options else strategy["name"]


def sessions(best: dict[str, Any], rounds: int, workdir: Path) -> dict[str, Any]:
    """Real bare sessions (α = 0.1, seed 0) beside this engine, for FedAvg and ``best``."""
    from airflow_nevermined_fl.devtools.session_local import LocalSession

    manifest = data.partition(workdir / "check", PROVIDERS, "non-iid", 0.1, 0.2, 0)
    out = {}
    for strategy in ({"name": "fedavg"}, best):
        report = LocalSession(
            PROVIDERS, rounds, EPOCHS, "non-iid", 0.1, 0, stall_timeout=120, strategy=strategy
        ).run()
        out[label(strategy)] = {
            "session": report["final_accuracy"],
            "engine": simulate(manifest, strategy, rounds, 0)[-1],
            "state": report["state"],
            "wall_time_s": report["wall_time_s"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sessions", action="store_true", help="also run real bare sessions (devstack S3)")
    parser.add_argument("--json", action="store_true", help="the JSON report only")
    args = parser.parse_args()
    report: dict[str, Any] = {"providers": PROVIDERS, "rounds": args.rounds, "epochs": EPOCHS, "splits": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for split, (scheme, alpha) in SPLITS.items():
            manifests = [
                data.partition(Path(tmp) / f"{split}-{seed}", PROVIDERS, scheme, alpha, 0.2, seed)
                for seed in range(args.seeds)
            ]
            ceiling = [central(m, args.rounds * EPOCHS, seed) for seed, m in enumerate(manifests)]
            curves = {
                label(s): [simulate(m, s, args.rounds, seed) for seed, m in enumerate(manifests)]
                for s in CANDIDATES
            }
            report["splits"][split] = {
                "test_rows": manifests[0]["test"]["rows"],
                "central_median": statistics.median(ceiling),
                "median_per_round": {
                    name: [statistics.median(c[r] for c in runs) for r in range(args.rounds)]
                    for name, runs in curves.items()
                },
                "final_per_seed": {name: [c[-1] for c in runs] for name, runs in curves.items()},
            }
        if args.sessions:
            finals = report["splits"]["alpha=0.1"]["median_per_round"]
            best = max(CANDIDATES, key=lambda s: finals[label(s)][-1])
            report["sessions"] = sessions(best, args.rounds, Path(tmp))
    print(json.dumps(report, indent=2))
    if not args.json:
        print(table(report))


def table(report: dict[str, Any]) -> str:
    splits = list(report["splits"])
    rounds = report["rounds"]
    marks = sorted({1, min(5, rounds), rounds})
    head = "| strategy | " + " | ".join(f"{s} r{r}" for s in splits for r in marks) + " |"
    lines = [head, "|" + "---|" * (1 + len(splits) * len(marks))]
    for name in report["splits"][splits[0]]["median_per_round"]:
        cells = [f"{report['splits'][s]['median_per_round'][name][r - 1]:.3f}" for s in splits for r in marks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ceiling = [f"{report['splits'][s]['central_median']:.3f}" for s in splits for _ in marks]
    lines.append("| central (ceiling) | " + " | ".join(ceiling) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
