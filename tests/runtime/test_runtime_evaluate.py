"""``runtime.evaluate.evaluate``, what ``fl_model_evaluation`` scores a published model with: a held-out
set that does not fit the model, or another file than the one published, is refused naming it."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from airflow_nevermined_fl.runtime.evaluate import evaluate
from airflow_nevermined_fl.runtime.softmax import ModelError, SoftmaxRegression


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


MODEL = _npz(**SoftmaxRegression(4, 3).arrays(np.arange(15, dtype=np.float64) / 10))


def test_a_fitting_held_out_set_is_scored() -> None:
    x, y = np.eye(4)[[0, 1, 2, 3, 0]], np.array([0, 1, 2, 0, 1])
    result = evaluate(MODEL, _npz(x=x, y=y), hashlib.sha256(MODEL).hexdigest())
    assert result["n"] == 5 and 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["loss"])


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (
            np.ones((2, 5)),
            np.array([0, 1]),
            "held-out data: 5 features and labels up to 1, but the model takes 4",
        ),
        (np.ones((2, 4)), np.array([0, 3]), "labels up to 3, but the model takes 4 features and 3 classes"),
    ],
)
def test_a_held_out_set_that_does_not_fit_is_refused(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        evaluate(MODEL, _npz(x=x, y=y))


def test_another_file_than_the_published_one_is_refused() -> None:
    with pytest.raises(ValueError, match="model: sha256 .* does not match the expected 00"):
        evaluate(MODEL, _npz(x=np.ones((1, 4)), y=np.array([0])), "00")
