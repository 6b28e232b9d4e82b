"""Evaluate a final softmax model on a held-out ``.npz`` split; prints one JSON line.

    python -m airflow_nevermined_fl.runtime.evaluate --model s3://bucket/key.npz --data test.npz \\
        [--sha256 HEX] [--s3-endpoint URL]

Airflow tasks call :func:`evaluate` on the bytes they read through their own storage connection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from airflow_nevermined_fl.runtime.softmax import ModelError, SoftmaxRegression, validate_data
from airflow_nevermined_fl.runtime.storage import StorageError, client, get_bytes, load_npz, parse_s3_url


def _read(location: str, endpoint: str | None, name: str) -> bytes:
    """A local file, or an ``s3://`` object read with the environment's keys."""
    if location.startswith("s3://"):
        return get_bytes(client(endpoint), *parse_s3_url(location, name))
    try:
        return Path(location).read_bytes()
    except OSError as exc:
        raise StorageError(f"{name}: cannot read {location!r} ({exc.strerror})") from None


def evaluate(model: bytes, data: bytes, sha256: str | None = None) -> dict[str, Any]:
    """``accuracy``, ``loss``, ``n`` (rows) and ``sha256`` of the final model file ``model`` on the held-out
    ``data`` (``x``, ``y``); raises ``ValueError`` (``StorageError``, ``ModelError``) naming the bad input,
    e.g. when ``sha256`` is given and differs."""
    digest = hashlib.sha256(model).hexdigest()
    if sha256 and digest != sha256:
        raise StorageError(f"model: sha256 {digest} does not match the expected {sha256}")
    arrays = load_npz(model, "model")
    held_out = load_npz(data, "held-out data")
    validate_data(held_out, "held-out data")
    num_features, num_classes = arrays["W"].shape
    x, y = held_out["x"], held_out["y"]
    if x.shape[1] != num_features or int(y.max()) >= num_classes:
        raise ModelError(
            f"held-out data: {x.shape[1]} features and labels up to {int(y.max())}, but the model takes"
            f" {num_features} features and {num_classes} classes"
        )
    loss, accuracy = SoftmaxRegression(num_features, num_classes).evaluate(
        arrays["weights"], x.astype("float64"), y.astype("int64")
    )
    return {"accuracy": accuracy, "loss": loss, "n": int(len(held_out["y"])), "sha256": digest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="s3://bucket/key of the final model .npz")
    parser.add_argument("--data", required=True, help="held-out .npz (x, y): path or s3://bucket/key")
    parser.add_argument("--sha256", help="expected sha256 of the model file")
    parser.add_argument("--s3-endpoint", help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    args = parser.parse_args(argv)
    try:
        model = _read(args.model, args.s3_endpoint, "--model")
        result = evaluate(model, _read(args.data, args.s3_endpoint, "--data"), args.sha256)
    except ValueError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
