"""``nvfl data partition``: split a bundled scikit-learn dataset into per-provider shards (seeded).

Each shard is ``provider-<i>.npz`` with ``x`` (float32, features scaled to [0, 1]), ``y`` (int64 labels) and
``num_classes``; ``test.npz`` is a held-out split no provider sees; ``manifest.json`` describes them all.
IID shuffles and deals rows evenly; non-IID gives each provider a label mix drawn from Dirichlet(alpha)
per class (smaller alpha = more skew).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

DATASETS = ("digits", "breast_cancer", "wine", "iris")
SCHEMES = ("iid", "non-iid")
MIN_SHARD = 10


class DataError(ValueError):
    """Bad partition input; the message names the option."""


def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if dataset not in DATASETS:
        raise DataError(f"--dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    bunch = getattr(datasets, f"load_{dataset}")()
    x = bunch.data.astype(np.float64)
    span = x.max(axis=0) - x.min(axis=0)
    x = (x - x.min(axis=0)) / np.where(span > 0, span, 1.0)
    return x.astype(np.float32), bunch.target.astype(np.int64)


def _non_iid(y: np.ndarray, providers: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    for _ in range(100):
        shards: list[list[int]] = [[] for _ in range(providers)]
        for label in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == label))
            cuts = (np.cumsum(rng.dirichlet([alpha] * providers)) * len(rows)).astype(int)[:-1]
            for shard, part in zip(shards, np.split(rows, cuts), strict=True):
                shard.extend(part.tolist())
        if min(len(s) for s in shards) >= MIN_SHARD:
            return [rng.permutation(np.array(s, dtype=np.int64)) for s in shards]
    raise DataError(
        f"--alpha: {alpha} leaves a provider with fewer than {MIN_SHARD} rows; use a larger alpha"
    )


def partition(
    out_dir: Path,
    providers: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    test_fraction: float = 0.2,
    seed: int = 0,
    dataset: str = "digits",
) -> dict[str, Any]:
    """Write the shards and ``test.npz`` into ``out_dir``; returns the manifest (also written as JSON)."""
    if providers < 1:
        raise DataError(f"--providers: expected an integer >= 1, got {providers}")
    if scheme not in SCHEMES:
        raise DataError(f"--scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
    if not alpha > 0:
        raise DataError(f"--alpha: expected a number > 0, got {alpha}")
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction: expected a number in (0, 1), got {test_fraction}")
    x, y = _load(dataset)
    num_classes = int(y.max() + 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test_rows, pool = order[:n_test], order[n_test:]
    if len(pool) < providers * MIN_SHARD:
        most = len(pool) // MIN_SHARD
        raise DataError(f"--providers: expected at most {most} ({MIN_SHARD} rows each), got {providers}")
    if scheme == "iid":
        shards = np.array_split(pool, providers)
    else:
        shards = [pool[rows] for rows in _non_iid(y[pool], providers, alpha, rng)]
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "dataset": dataset,
        "scheme": scheme,
        "alpha": alpha if scheme == "non-iid" else None,
        "seed": seed,
        "num_features": int(x.shape[1]),
        "num_classes": num_classes,
        "providers": [],
    }
    for index, rows in enumerate(shards):
        path = out_dir / f"provider-{index}.npz"
        np.savez(path, x=x[rows], y=y[rows], num_classes=num_classes)
        counts = np.bincount(y[rows], minlength=num_classes).tolist()
        manifest["providers"].append({"path": str(path), "rows": int(len(rows)), "label_counts": counts})
    np.savez(out_dir / "test.npz", x=x[test_rows], y=y[test_rows], num_classes=num_classes)
    manifest["test"] = {"path": str(out_dir / "test.npz"), "rows": int(n_test)}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def softmax_model(manifest: dict[str, Any]) -> dict[str, Any]:
    """The built-in softmax model spec sized to the data of a ``partition`` manifest."""
    sizes = {key: manifest[key] for key in ("num_features", "num_classes")}
    return {"name": "softmax", **sizes}
