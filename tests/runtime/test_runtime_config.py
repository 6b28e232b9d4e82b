"""Session config validation: each bad field is named with what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_nevermined_fl.runtime.config import (
    ChannelSpec,
    ConfigError,
    ModelSpec,
    SeatSpec,
    SessionConfig,
    StorageSpec,
    load,
    parse,
)

ALICE = "0x" + "a1" * 20
ALICE_CASED = "0x" + "A1" * 20  # the same address: a duplicate seat
BOB = "0x" + "B2" * 20
CHANNEL: dict[str, Any] = {"seats": [{"address": ALICE, "max_samples": 600}]}
VALID: dict[str, Any] = {
    "session_id": "s-1",
    "rounds": 2,
    "storage": {"endpoint": "http://127.0.0.1:9000", "bucket": "nvfl", "prefix": "/a/b/"},
    "model": {"name": "softmax", "num_features": 64, "num_classes": 10},
    "channel": CHANNEL,
}


def test_valid_config_with_defaults() -> None:
    config = parse(VALID)
    assert (config.rounds, config.epochs, config.min_participants, config.fraction) == (2, 1, 1, 1.0)
    assert config.storage.prefix == "a/b/" and config.storage.url("0/global") == "s3://nvfl/a/b/0/global"
    assert config.model.num_classes == 10 and config.grpc_port == 0 and config.status_port == 0
    assert config.channel == ChannelSpec(seats=(SeatSpec(ALICE, 600),)) and not config.stock_sdk
    assert (config.channel.tls_cert, config.channel.tls_key, config.channel.grants) == (
        "tls.crt",
        "tls.key",
        "grants.json",
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rounds": 0}, "rounds"),
        ({"rounds": "3"}, "rounds"),
        ({"rounds": True}, "rounds"),
        ({"fraction": 0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"min_participants": 0}, "min_participants"),
        ({"epochs": 0}, "epochs"),
        ({"heartbeat_period": 0}, "heartbeat_period"),
        ({"stall_timeout": -1}, "stall_timeout"),
        ({"linger": -1}, "linger"),
        ({"grpc_port": 70000}, "grpc_port"),
        ({"session_id": "a b"}, "session_id"),
        ({"initial_model": "http://x/y"}, "initial_model"),
        ({"model": {"name": "resnet"}}, "model.name"),
        ({"model": {"name": "softmax", "num_features": 64}}, "model.num_classes"),
        ({"storage": {"bucket": "Bad_Bucket"}}, "storage.bucket"),
        ({"storage": {"prefix": "x"}}, "storage.bucket"),
        ({"storage": {"bucket": "nvfl", "endpoint": "ftp://x"}}, "storage.endpoint"),
        ({"storage": {"bucket": "nvfl", "secret_access_key": "s"}}, "storage"),
        ({"channel": None}, "channel"),
        ({"stock_sdk": True}, "channel"),
        ({"stock_sdk": "yes"}, "stock_sdk"),
        ({"channel": ["tls.crt"]}, "channel"),
        ({"channel": {}}, "channel.seats"),
        ({"channel": {"seats": []}}, "channel.seats"),
        ({"channel": {"seats": [ALICE]}}, "channel.seats[0]"),
        ({"channel": {"seats": [{"max_samples": 1}]}}, "channel.seats[0].address"),
        ({"channel": {"seats": [{"address": "0x1234", "max_samples": 1}]}}, "channel.seats[0].address"),
        ({"channel": {"seats": [{"address": ALICE}]}}, "channel.seats[0].max_samples"),
        ({"channel": {"seats": [{"address": ALICE, "max_samples": 0}]}}, "channel.seats[0].max_samples"),
        (
            {"channel": {"seats": [*CHANNEL["seats"], {"address": ALICE_CASED, "max_samples": 1}]}},
            "channel.seats",
        ),
        ({"channel": {**CHANNEL, "tls_key": "../tls.key"}}, "channel.tls_key"),
        ({"channel": {**CHANNEL, "tls_cert": "/etc/ssl/cert.pem"}}, "channel.tls_cert"),
        ({"channel": {**CHANNEL, "grants": ".grants.json"}}, "channel.grants"),
        ({"channel": {**CHANNEL, "grants": 7}}, "channel.grants"),
    ],
)
def test_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({**VALID, **change})
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: expected")


def test_missing_storage_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^storage: expected"):
        parse({"session_id": "s", "rounds": 1, "channel": CHANNEL})
    with pytest.raises(ConfigError, match="^--config: expected a readable"):
        load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="^--config: expected valid json"):
        load(broken)


def test_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "session.toml"
    path.write_text(
        'session_id = "t"\nrounds = 4\nfraction = 0.5\n[storage]\nbucket = "nvfl"\n'
        f'[[channel.seats]]\naddress = "{ALICE}"\nmax_samples = 9\n'
    )
    config = load(path)
    assert (config.rounds, config.fraction, config.storage.bucket, config.model.name) == (
        4,
        0.5,
        "nvfl",
        "custom",
    )
    assert config.channel == ChannelSpec(seats=(SeatSpec(ALICE, 9),))


def test_rendered_config_parses_back_equal() -> None:
    """What callers render (``SessionConfig.to_json``) is what the coordinator reads, field for field."""
    config = SessionConfig(
        session_id="s-2",
        rounds=3,
        storage=StorageSpec("nvfl", "/sessions/s-2", "http://127.0.0.1:9000"),
        heartbeat_period=0.5,
        grpc_port=50051,
        model=ModelSpec.of({"name": "softmax", "num_features": 64, "num_classes": 10}),
        initial_model="s3://nvfl/m/final.npz",
        linger=600,
        channel=ChannelSpec(seats=(SeatSpec(ALICE, 5), SeatSpec(BOB.lower(), 7)), grants="g.json"),
    )
    assert config.storage.prefix == "sessions/s-2/"
    assert parse(json.loads(config.to_json())) == config
    custom = SessionConfig(
        "s-3", 1, StorageSpec("nvfl"), model=ModelSpec.of({"name": "pkg.mod:Net"}), stock_sdk=True
    )
    assert custom.to_dict()["model"] == {"name": "custom"} and "initial_model" not in custom.to_dict()
    assert "channel" not in custom.to_dict() and custom.to_dict()["stock_sdk"] is True
    assert parse(custom.to_dict()) == custom


def test_seat_addresses_are_normalized_to_lower_case() -> None:
    config = parse({**VALID, "channel": {"seats": [{"address": BOB, "max_samples": 3}]}})
    assert config.channel is not None and config.channel.seats == (SeatSpec(BOB.lower(), 3),)


def test_heartbeat_timeout_defaults_from_the_period() -> None:
    """One rule, whoever renders or omits it: 5 periods, at least 5 s; an explicit value wins."""
    storage = StorageSpec("nvfl")
    assert SessionConfig("s", 1, storage, heartbeat_period=0.5).heartbeat_timeout == 5.0
    assert SessionConfig("s", 1, storage, heartbeat_period=10).heartbeat_timeout == 50.0
    assert SessionConfig("s", 1, storage, heartbeat_timeout=2).heartbeat_timeout == 2
    assert parse({**VALID, "heartbeat_period": 2}).heartbeat_timeout == 10.0
    assert parse({**VALID, "heartbeat_timeout": 3}).heartbeat_timeout == 3.0
