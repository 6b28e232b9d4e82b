"""Each bad input: exit code 2, a message naming the field, no secret in the output (S3 keys, TLS key, grant
signatures, seat tickets), nothing in the bucket."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airflow_nevermined_fl.devtools.session_channel import SessionChannel
from airflow_nevermined_fl.devtools.session_local import runtime_env
from airflow_nevermined_fl.gateway.channel import data_grant, key_pair
from airflow_nevermined_fl.runtime.storage import StorageError, http_post
from airflow_nevermined_fl.runtime.workload import COORDINATOR_MODULE as COORDINATOR
from airflow_nevermined_fl.runtime.workload import PARTICIPANT_MODULE as PARTICIPANT

DIRECTORY = object()
"""In a ``files`` change: put a directory where the file should be (unreadable as a file, even for root)."""
MISSING_MODEL = "s3://nvfl/missing/model.npz"


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


def _assert_rejected(result: subprocess.CompletedProcess[str], field: str, secrets: list[str]) -> None:
    assert result.returncode == 2, result.stderr
    assert field in result.stderr, result.stderr
    output = result.stdout + result.stderr
    assert "X-Amz-Signature" not in output  # no grant URL (a credential) is echoed
    for secret in secrets:
        assert secret not in output


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A config change: set the dotted ``path`` (list items by index) to ``value``; ``...`` deletes it."""

    def change(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = config
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _duplicate_seat(config: dict[str, Any]) -> None:
    """Seat 1 becomes seat 0's provider again, spelled in upper case."""
    config["channel"]["seats"][1]["address"] = "0x" + config["channel"]["seats"][0]["address"][2:].upper()


def _without_upload_grant(directory: Path) -> None:
    grants = json.loads((directory / "grants.json").read_text())
    upload = next(name for name in grants["objects"] if name.startswith("uploads/"))
    del grants["objects"][upload]["get"]
    (directory / "grants.json").write_text(json.dumps(grants))


STOCK = {"stock_sdk": True}
CASES = [
    pytest.param([_set("rounds", 0)], {}, {}, "rounds: expected an integer >= 1", id="rounds"),
    pytest.param([_set("fraction", 0)], {}, {}, "fraction: expected a number in (0, 1]", id="fraction-0"),
    pytest.param([_set("fraction", 1.5)], {}, {}, "fraction: expected a number in (0, 1]", id="fraction-1.5"),
    pytest.param(
        [_set("min_participants", 0)], {}, {}, "min_participants: expected an integer >= 1", id="min"
    ),
    pytest.param(
        [_set("model", {"name": "resnet"})], {}, {}, "model.name: expected one of softmax, custom", id="model"
    ),
    # The secure channel.
    pytest.param(
        [_set("channel", ...)],
        {},
        {},
        "channel: expected an object {tls_cert, tls_key, grants, seats} (or stock_sdk: true)",
        id="no-channel",
    ),
    pytest.param(
        [_set("stock_sdk", True)],
        {},
        {},
        "channel: expected nothing with stock_sdk: true",
        id="channel-with-stock-sdk",
    ),
    pytest.param(
        [_set("channel.seats.1.address", "0xnot-an-address")],
        {},
        {},
        "channel.seats[1].address: expected a 0x address, got '0xnot-an-address'",
        id="seat-address",
    ),
    pytest.param(
        [_duplicate_seat],
        {},
        {},
        "channel.seats: expected a non-empty list of distinct addresses",
        id="dup-seat",
    ),
    pytest.param(
        [_set("channel.seats.0.max_samples", 0)],
        {},
        {},
        "channel.seats[0].max_samples: expected an integer >= 1",
        id="seat-max-samples",
    ),
    pytest.param(
        [_set("channel.tls_key", "../tls.key")],
        {},
        {},
        "channel.tls_key: expected a file name next to the config (no directories), got '../tls.key'",
        id="tls-key-name",
    ),
    pytest.param(
        [_set("channel.grants", "/etc/passwd")],
        {},
        {},
        "channel.grants: expected a file name next to the config (no directories)",
        id="grants-name",
    ),
    pytest.param(
        [_set("channel.tls_cert", ".tls.crt")],
        {},
        {},
        "channel.tls_cert: expected a file name next to the config (no directories)",
        id="tls-cert-name",
    ),
    pytest.param(
        [],
        {"tls.key": None},
        {},
        "channel.tls_key: expected a readable PEM file next to the config, got 'tls.key (No such file",
        id="tls-key-missing",
    ),
    pytest.param(
        [],
        {"tls.key": DIRECTORY},
        {},
        "channel.tls_key: expected a readable PEM file next to the config, got 'tls.key (Is a directory)'",
        id="tls-key-unreadable",
    ),
    pytest.param(
        [_set("channel.tls_key", "session.key")],
        {},
        {},
        "channel.tls_key: expected a readable PEM file next to the config, got 'session.key (No such file",
        id="tls-key-renamed",
    ),
    pytest.param(
        [], {"tls.crt": None}, {}, "channel.tls_cert: expected a readable PEM file", id="tls-cert-missing"
    ),
    pytest.param(
        [],
        {"tls.crt": "not a certificate"},
        {},
        "channel.tls_cert: expected a PEM certificate",
        id="tls-cert-pem",
    ),
    pytest.param(
        [],
        {"grants.json": None},
        {},
        "channel.grants: cannot read grants.json (FileNotFoundError)",
        id="grants-missing",
    ),
    pytest.param(
        [],
        {"grants.json": DIRECTORY},
        {},
        "channel.grants: cannot read grants.json (IsADirectoryError)",
        id="grants-unreadable",
    ),
    pytest.param(
        [],
        {"grants.json": "{"},
        {},
        "channel.grants: cannot read grants.json (JSONDecodeError)",
        id="grants-json",
    ),
    pytest.param(
        [], _without_upload_grant, {}, "channel.grants: no GET grant for uploads/p-", id="grants-incomplete"
    ),
    pytest.param(
        [_set("initial_model", MISSING_MODEL)],
        {},
        {},
        "no GET grant for it in channel.grants",
        id="initial-model-not-granted",
    ),
    pytest.param(
        [_set("initial_model", MISSING_MODEL)],
        "granted",
        {},
        "initial_model: cannot read (HTTP 404)",
        id="initial-model-missing",
    ),
    # A stock_sdk session's bucket and keys (from the environment).
    pytest.param(
        [_set("stock_sdk", True), _set("channel", ...), _set("storage.bucket", "no-such-bucket")],
        {},
        {},
        "storage.bucket: bucket 'no-such-bucket' does not exist",
        id="stock-bucket",
    ),
    pytest.param(
        [_set("stock_sdk", True), _set("channel", ...), _set("initial_model", MISSING_MODEL)],
        {},
        {},
        f"initial_model: {MISSING_MODEL}: cannot read",
        id="stock-initial-model",
    ),
    pytest.param(
        [_set("stock_sdk", True), _set("channel", ...)],
        {},
        {"AWS_SECRET_ACCESS_KEY": "wrong-secret"},
        "S3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        id="stock-wrong-secret",
    ),
    pytest.param(
        [_set("stock_sdk", True), _set("channel", ...)],
        {},
        {"AWS_SECRET_ACCESS_KEY": ""},
        "S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        id="stock-no-secret",
    ),
]


def _write_files(channel: SessionChannel, directory: Path, files: Any) -> None:
    """The channel's coordinator files in ``directory``, then ``files``' changes: a function of the directory,
    or name -> new content, None (deleted) or :data:`DIRECTORY`."""
    channel.write_coordinator_files(directory)
    if callable(files):
        files(directory)
        return
    for name, content in files.items():
        path = directory / name
        path.unlink()
        if content is DIRECTORY:
            path.mkdir()
        elif content is not None:
            path.write_text(content)


@pytest.mark.parametrize(("changes", "files", "env_change", "field"), CASES)
def test_coordinator_bad_input(
    changes: list[Callable[[dict[str, Any]], None]],
    files: Any,
    env_change: dict[str, str],
    field: str,
    make_config: Callable[..., dict[str, Any]],
    make_channel: Callable[..., SessionChannel],
    channel: SessionChannel,
    prefix: str,
    seaweed: dict[str, Any],
    s3_env: dict[str, str],
    list_keys: Callable[[str, str], list[str]],
    fl_python: Path,
    tmp_path: Path,
) -> None:
    if files == "granted":  # a channel that grants a read of the (missing) warm-start model
        channel, files = make_channel(MISSING_MODEL), {}
    config = make_config(channel=channel.spec.to_dict())
    for change in changes:
        change(config)
    _write_files(channel, tmp_path, files)
    path = tmp_path / "session.json"
    path.write_text(json.dumps(config))
    secrets = [s3_env["AWS_SECRET_ACCESS_KEY"], channel.pair.key_pem.splitlines()[1]]
    env = {**s3_env, **env_change} if config.get("stock_sdk") else {}  # a secure coordinator gets no key
    result = _run(fl_python, COORDINATOR, ["--config", str(path)], env)
    _assert_rejected(result, field, secrets)
    assert "NVFL_COORDINATOR_READY" not in result.stdout
    assert result.stderr.startswith("coordinator: error: "), result.stderr
    assert list_keys(seaweed["bucket"], prefix) == []


@pytest.mark.parametrize(
    ("files", "field"),
    [
        pytest.param({"tls.key": "not a key"}, "channel.tls_key", id="tls-key-pem"),
        pytest.param("other-key", "channel.tls_key", id="tls-key-of-another-cert"),
        pytest.param({"grants.json": "[]"}, "channel.grants", id="grants-list"),
        pytest.param(
            {"grants.json": '{"objects": {"global.npy": "u"}}'},
            "channel.grants",
            id="grants-shape",
        ),
        pytest.param(
            {"grants.json": '{"objects": {"uploads/p-0.npy": {"post": "https://s3/upload"}}}'},
            "channel.grants",
            id="grants-upload-not-a-form",
        ),
    ],
)
def test_coordinator_bad_secret_file_contents(
    files: dict[str, str],
    field: str,
    make_config: Callable[..., dict[str, Any]],
    channel: SessionChannel,
    fl_python: Path,
    tmp_path: Path,
) -> None:
    if files == "other-key":
        files = {"tls.key": key_pair(channel.session_id, 600).key_pem}
    _write_files(channel, tmp_path, files)
    path = tmp_path / "session.json"
    path.write_text(json.dumps(make_config()))
    result = _run(fl_python, COORDINATOR, ["--config", str(path)], {})
    _assert_rejected(result, f"coordinator: error: {field}: ", [channel.pair.key_pem.splitlines()[1]])


@pytest.fixture
def bad_files(
    tmp_path: Path, channel: SessionChannel, s3_client: Any, seaweed: dict[str, Any]
) -> dict[str, str]:
    """Files for the participant's options: bad data, seat and certificate files, data URL files."""
    files = {
        "text": "notes.npz",
        "missing": "missing.npz",
        "empty": "empty",
        "cert": "coordinator.crt",
        "seat": "seat",
        "url_404": "url-404",
        "url_403": "url-403",
        "url_text": "url-text",
    }
    paths = {name: str(tmp_path / file) for name, file in files.items()}
    (tmp_path / "notes.npz").write_text("not a zip")
    np.savez(tmp_path / "wrong.npz", features=np.zeros((3, 2)))
    paths["wrong"] = str(tmp_path / "wrong.npz")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "coordinator.crt").write_text(channel.pair.cert_pem)
    (tmp_path / "seat").write_text(channel.ticket(0))
    (tmp_path / "garbage.crt").write_text("not a certificate")
    paths["garbage_cert"] = str(tmp_path / "garbage.crt")
    bucket = seaweed["bucket"]
    s3_client.put_object(Bucket=bucket, Key=f"{channel.session_id}/notes.npz", Body=b"not a zip")
    (tmp_path / "url-404").write_text(data_grant(s3_client, f"s3://{bucket}/no/such/shard.npz", 600))
    (tmp_path / "url-403").write_text(f"{seaweed['endpoint']}/{bucket}/{channel.session_id}/notes.npz")
    (tmp_path / "url-text").write_text(
        data_grant(s3_client, f"s3://{bucket}/{channel.session_id}/notes.npz", 600)
    )
    return paths


PARTICIPANT_CASES = [
    (["--model", "no_such_module:Model"], "--model: cannot import 'no_such_module:Model'"),
    (["--model", "json:JSONDecoder"], "--model: 'json:JSONDecoder' is not a subclass"),
    (["--model", "resnet"], "--model: expected 'softmax' or 'module:Class'"),
    (["--data", "{missing}"], "--data: cannot read"),
    (["--data", "{text}"], "--data: not a readable .npz"),
    (["--data", "{wrong}"], "--data: expected arrays 'x' and 'y'"),
    (["--data", None, "--data-url-file", "{missing}"], "--data-url-file: expected a readable file"),
    (["--data", None, "--data-url-file", "{empty}"], "--data-url-file: expected a non-empty file"),
    (["--data", None, "--data-url-file", "{url_404}"], "--data-url-file: cannot read (HTTP 404)"),
    (["--data", None, "--data-url-file", "{url_403}"], "--data-url-file: cannot read (HTTP 403)"),
    (["--data", None, "--data-url-file", "{url_text}"], "--data-url-file: not a readable .npz"),
    (["--data-url-file", "{url_404}"], "argument --data-url-file: not allowed with argument --data"),
    (["--data", None], "one of the arguments --data --data-url-file is required"),
    (["--seat-file", "{missing}"], "--seat-file: expected a readable file"),
    (["--seat-file", "{empty}"], "--seat-file: expected a non-empty file"),
    (["--seat-file", None], "the following arguments are required: --seat-file"),
    (["--coordinator-cert", "{missing}"], "--coordinator-cert: expected a readable file"),
    (["--coordinator-cert", "{empty}"], "--coordinator-cert: expected a non-empty file"),
    (["--coordinator-cert", None], "the following arguments are required: --coordinator-cert"),
    (["--heartbeat", "0"], "--heartbeat: expected a number > 0"),
    (["--coordinator", "nowhere"], "--coordinator: expected HOST:PORT"),
    (["--storage", "s3://nvfl/p"], "unrecognized arguments: --storage"),  # no storage key, no bucket
]


@pytest.mark.parametrize(("args", "field"), PARTICIPANT_CASES)
def test_participant_bad_input(
    args: list[Any],
    field: str,
    bad_files: dict[str, str],
    channel: SessionChannel,
    shards: dict[str, Any],
    prefix: str,
    seaweed: dict[str, Any],
    s3_env: dict[str, str],
    list_keys: Callable[[str, str], list[str]],
    fl_python: Path,
) -> None:
    options: dict[str, str | None] = {
        "--coordinator": "127.0.0.1:9",
        "--coordinator-cert": bad_files["cert"],
        "--seat-file": bad_files["seat"],
        "--data": shards["providers"][0]["path"],
    }
    for name, value in zip(args[::2], args[1::2], strict=True):
        options[name] = None if value is None else value.format(**bad_files)
    argv = [item for name, value in options.items() if value is not None for item in (name, value)]
    # Even with S3 keys in its environment, a participant reads nothing but what it is granted.
    result = _run(fl_python, PARTICIPANT, argv, s3_env)
    _assert_rejected(result, field, [s3_env["AWS_SECRET_ACCESS_KEY"], channel.ticket(0)])
    assert list_keys(seaweed["bucket"], prefix) == []


def test_participant_refuses_a_certificate_that_is_not_pem(
    bad_files: dict[str, str], shards: dict[str, Any], fl_python: Path
) -> None:
    argv = ["--coordinator", "127.0.0.1:9", "--coordinator-cert", bad_files["garbage_cert"]]
    argv += [
        "--seat-file",
        bad_files["seat"],
        "--data",
        shards["providers"][0]["path"],
        "--connect-timeout",
        "1",
    ]
    result = _run(fl_python, PARTICIPANT, argv, {})
    _assert_rejected(result, "--coordinator-cert: expected a PEM certificate", [])


@pytest.mark.parametrize("form", ["https://s3/upload", "{}", '{"url": "https://s3", "fields": []}'])
def test_upload_grant_not_a_presigned_post(form: str) -> None:
    """An upload grant that is not a presigned POST fails naming it, before any request."""
    with pytest.raises(StorageError, match=r"^upload: malformed upload grant \(expected a presigned POST\)$"):
        http_post(form, "upload", b"weights")
