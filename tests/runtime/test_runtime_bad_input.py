"""Each bad input: exit code 2, a message naming the field, no secret in the output, nothing in the bucket."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airflow_nevermined_fl.devtools.session_local import runtime_env

COORDINATOR = "airflow_nevermined_fl.runtime.coordinator"
PARTICIPANT = "airflow_nevermined_fl.runtime.participant"


def _run(
    fl_python: Path, module: str, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(fl_python), "-m", module, *args],
        capture_output=True,
        text=True,
        env=runtime_env(env),
        timeout=60,
    )


def _assert_rejected(result: subprocess.CompletedProcess[str], field: str, s3_env: dict[str, str]) -> None:
    assert result.returncode == 2, result.stderr
    assert field in result.stderr, result.stderr
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "env_change", "field"),
    [
        ({"rounds": 0}, {}, "rounds: expected an integer >= 1"),
        ({"fraction": 0}, {}, "fraction: expected a number in (0, 1]"),
        ({"fraction": 1.5}, {}, "fraction: expected a number in (0, 1]"),
        ({"min_participants": 0}, {}, "min_participants: expected an integer >= 1"),
        ({"model": {"name": "resnet"}}, {}, "model.name: expected one of softmax, custom"),
        ({"initial_model": "s3://nvfl/missing/model.npz"}, {}, "initial_model: s3://nvfl/missing/model.npz"),
        ({"storage_bucket": "no-such-bucket"}, {}, "storage.bucket: bucket 'no-such-bucket' does not exist"),
        (
            {},
            {"AWS_SECRET_ACCESS_KEY": "wrong-secret"},
            "S3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        ),
        ({}, {"AWS_SECRET_ACCESS_KEY": ""}, "S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_coordinator_bad_input(
    change: dict[str, Any],
    env_change: dict[str, str],
    field: str,
    make_config: Callable[..., dict[str, Any]],
    prefix: str,
    seaweed: dict[str, Any],
    s3_env: dict[str, str],
    list_keys: Callable[[str, str], list[str]],
    fl_python: Path,
    tmp_path: Path,
) -> None:
    config = make_config(**{k: v for k, v in change.items() if k != "storage_bucket"})
    if "storage_bucket" in change:
        config["storage"] = {**config["storage"], "bucket": change["storage_bucket"]}
    path = tmp_path / "session.json"
    path.write_text(json.dumps(config))
    result = _run(fl_python, COORDINATOR, ["--config", str(path)], {**s3_env, **env_change})
    _assert_rejected(result, field, s3_env)
    assert "NVFL_COORDINATOR_READY" not in result.stdout
    assert list_keys(seaweed["bucket"], prefix) == []


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    text = tmp_path / "notes.npz"
    text.write_text("not a zip")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, features=np.zeros((3, 2)))
    return {"text": str(text), "wrong": str(wrong), "missing": str(tmp_path / "missing.npz")}


@pytest.mark.parametrize(
    ("args", "env_change", "field"),
    [
        (["--model", "no_such_module:Model"], {}, "--model: cannot import 'no_such_module:Model'"),
        (["--model", "json:JSONDecoder"], {}, "--model: 'json:JSONDecoder' is not a subclass"),
        (["--model", "resnet"], {}, "--model: expected 'softmax' or 'module:Class'"),
        (["--data", "{missing}"], {}, "--data: cannot read"),
        (["--data", "{text}"], {}, "--data: not a readable .npz"),
        (["--data", "{wrong}"], {}, "--data: expected arrays 'x' and 'y'"),
        (["--data", "s3://nvfl/no/such/shard.npz"], {}, "--data: s3://nvfl/no/such/shard.npz: cannot read"),
        (["--storage", "s3://no-such-bucket"], {}, "storage.bucket: bucket 'no-such-bucket' does not exist"),
        ([], {"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "S3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET"),
        (["--heartbeat", "0"], {}, "--heartbeat: expected a number > 0"),
        (["--coordinator", "nowhere"], {}, "--coordinator: expected HOST:PORT"),
    ],
)
def test_participant_bad_input(
    args: list[str],
    env_change: dict[str, str],
    field: str,
    bad_files: dict[str, str],
    prefix: str,
    shards: dict[str, Any],
    seaweed: dict[str, Any],
    s3_env: dict[str, str],
    list_keys: Callable[[str, str], list[str]],
    fl_python: Path,
) -> None:
    options = {
        "--coordinator": "127.0.0.1:9",
        "--data": shards["providers"][0]["path"],
        "--storage": f"s3://{seaweed['bucket']}/{prefix}",
    }
    for name, value in zip(args[::2], args[1::2], strict=True):
        options[name] = value.format(**bad_files)
    argv = [item for pair in options.items() for item in pair]
    result = _run(fl_python, PARTICIPANT, argv, {**s3_env, **env_change})
    _assert_rejected(result, field, s3_env)
    assert list_keys(seaweed["bucket"], prefix) == []
