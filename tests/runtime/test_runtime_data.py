"""``nvfl data partition``: seeded, disjoint shards; IID and non-IID by label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from airflow_nevermined_fl.devtools.cli import main
from airflow_nevermined_fl.devtools.data import DataError, _load, partition


def _rows(path: str) -> np.ndarray:
    with np.load(path) as npz:
        return npz["x"]


def test_shards_are_disjoint_cover_the_pool_and_are_seeded(tmp_path: Path) -> None:
    first = partition(tmp_path / "a", 3, "non-iid", 0.5, 0.2, seed=7)
    again = partition(tmp_path / "b", 3, "non-iid", 0.5, 0.2, seed=7)
    other = partition(tmp_path / "c", 3, "non-iid", 0.5, 0.2, seed=8)
    shards = [_rows(p["path"]) for p in first["providers"]]
    test = _rows(first["test"]["path"])
    everything = np.concatenate([*shards, test])
    full, _ = _load("digits")
    # Shards plus test are exactly the dataset's rows (as a multiset): disjoint and complete.
    assert np.array_equal(everything[np.lexsort(everything.T)], full[np.lexsort(full.T)])
    assert sum(p["rows"] for p in first["providers"]) + first["test"]["rows"] == 1797
    assert [p["label_counts"] for p in first["providers"]] == [p["label_counts"] for p in again["providers"]]
    assert [p["label_counts"] for p in first["providers"]] != [p["label_counts"] for p in other["providers"]]
    assert test.min() >= 0.0 and test.max() <= 1.0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["num_classes"] == 10


def test_non_iid_is_skewed_and_iid_is_balanced(tmp_path: Path) -> None:
    def skew(manifest: dict) -> float:
        counts = np.array([p["label_counts"] for p in manifest["providers"]], dtype=float)
        share = counts / counts.sum(axis=0)
        return float(np.abs(share - 1 / 3).mean())

    iid = partition(tmp_path / "iid", 3, "iid", seed=0)
    non_iid = partition(tmp_path / "non", 3, "non-iid", 0.3, seed=0)
    assert {p["rows"] for p in iid["providers"]} <= {479, 480}
    assert skew(non_iid) > 3 * skew(iid)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"providers": 0}, "--providers"),
        ({"providers": 500}, "--providers"),
        ({"scheme": "random"}, "--scheme"),
        ({"alpha": 0}, "--alpha"),
        ({"test_fraction": 1.0}, "--test-fraction"),
        ({"dataset": "mnist"}, "--dataset"),
    ],
)
def test_bad_input_names_the_option(tmp_path: Path, kwargs: dict, option: str) -> None:
    args = {"providers": 3, **kwargs}
    with pytest.raises(DataError, match=f"^{option}: expected"):
        partition(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_cli_partition_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "partition", "--providers", "2", "--out", str(tmp_path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["providers"]) == 2
    assert main(["data", "partition", "--providers", "2", "--out", str(tmp_path), "--scheme", "x"]) == 2
    assert "--scheme: expected one of iid, non-iid" in capsys.readouterr().err
