"""Session Params (JSON schema, run-start validation naming the field) and DDOs (checksums, no secrets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.params import PROPERTIES, ConfError, defaults, session_params, validate_conf

DID = "did:nv:" + "ab" * 32
PROVIDERS = {
    "coordinator": {"did": "did:nv:" + "c0" * 32},
    "data_providers": [{"did": f"did:nv:{i:02x}" + "d" * 62} for i in (1, 2, 3)],
}


def test_every_param_has_a_description_and_a_valid_default() -> None:
    params = session_params(**PROVIDERS)
    assert set(params) == set(PROPERTIES)
    for name, param in params.items():
        assert param.description, name
        assert param.resolve() == {**defaults(), **PROVIDERS}[name]
    assert validate_conf(PROVIDERS) == {**defaults(), **PROVIDERS}


def _conf(**changes: Any) -> dict[str, Any]:
    return {**PROVIDERS, **changes}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (_conf(rounds=0), "conf.rounds: 0 is less than the minimum of 1"),
        (_conf(fraction=0), "conf.fraction: 0 is less than or equal to the minimum of 0"),
        (_conf(heartbeat="fast"), "conf.heartbeat: 'fast' is not of type 'number'"),
        (_conf(data_providers=[]), "conf.data_providers: [] should be non-empty"),
        ({}, "conf.coordinator: None is not of type 'object'"),
        (
            _conf(data_providers=[{"did": "did:nv:12"}]),
            "conf.data_providers[0].did: 'did:nv:12' does not match",
        ),
        (
            _conf(data_providers=[{"did": DID, "dataset": "/data/x.npz"}]),
            "conf.data_providers[0]: Additional properties are not allowed ('dataset' was unexpected)",
        ),
        (_conf(coordinator={"name": "c"}), "conf.coordinator: 'did' is a required property"),
        (_conf(max_price=0), "conf.max_price: 0 is less than or equal to the minimum of 0"),
        (_conf(max_price="0.0"), "conf.max_price: '0.0' does not match"),
        (_conf(max_price="5 NVM"), "conf.max_price: '5 NVM' does not match"),
        (_conf(max_price=float("inf")), "conf.max_price: expected a non-negative number of tokens"),
        (_conf(model={"name": "softmax"}), "conf.model: 'num_features' is a required property"),
        (_conf(model={"name": "x y"}), "conf.model.name: 'x y' does not match"),
        (_conf(initial_model="http://x"), "conf.initial_model: 'http://x' does not match"),
        (_conf(surprise=1), "conf: Additional properties are not allowed ('surprise' was unexpected)"),
        (_conf(min_participants=4), "conf.min_participants: 4 exceeds the 3 data providers"),
        (_conf(fraction=0.5), "conf.fraction: 0.5 of 3 providers selects fewer than min_participants=3"),
        (
            _conf(data_providers=[{"did": DID}, {"did": DID}], min_participants=1),
            f"conf.data_providers[1].did: {DID} is listed twice",
        ),
    ],
)
def test_bad_conf_names_the_field(conf: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfError) as err:
        validate_conf(conf)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(("given", "kept"), [("5", "5"), (10, "10"), (0.1, "0.1"), ("0.250", "0.25")])
def test_max_price_is_kept_in_tokens_as_a_plain_decimal_string(given: Any, kept: str) -> None:
    assert validate_conf(_conf(max_price=given))["max_price"] == kept


def test_ddo_checksum_covers_main_only_and_detects_tampering() -> None:
    conf = validate_conf(PROVIDERS)
    main = ddo.coordinator_main(conf, "fl-abc", "0x" + "11" * 20, "0x" + "22" * 20, ["did:nv:" + "cc" * 32])
    doc = ddo.build("did:nv:" + "ab" * 32, "0x" + "11" * 20, main)
    assert doc["proof"]["checksum"] == ddo.checksum(main) == ddo.ddo_checksum(doc)
    assert main["type"] == "fl-coordinator"
    params = main["parameters"]
    assert (params["rounds"], params["minParticipants"], params["participantsRatio"]) == (3, 3, 1.0)
    assert (
        params["participants"] == ["did:nv:" + "cc" * 32]
        and params["sessionTimeout"] == conf["session_timeout"]
    )
    assert (
        main["workflow"]["coordinator"]["entrypoint"] == "python -m airflow_nevermined_fl.runtime.coordinator"
    )
    doc["service"][0]["attributes"]["additionalInformation"]["coordinatorUrl"] = "127.0.0.1:1"
    ddo.verify(doc)  # outside the checksummed block
    doc["service"][0]["attributes"]["main"]["parameters"]["rounds"] = 99
    with pytest.raises(ValueError, match="checksum mismatch"):
        ddo.verify(doc)


def test_ddos_hold_only_public_values() -> None:
    conf = validate_conf(PROVIDERS)
    coordinator = ddo.coordinator_main(
        conf, "fl-abc", "0x" + "11" * 20, "0x" + "22" * 20, ["did:nv:" + "cc" * 32]
    )
    participant = ddo.participant_main(
        "fl-abc",
        "0x" + "11" * 20,
        {"name": "provider-1"},
        "0x" + "33" * 20,
        "did:nv:" + "aa" * 32,
        "did:nv:" + "bb" * 32,
        conf["model"],
    )
    text = json.dumps([coordinator, participant])
    for private in ("conn_id", "nevermined_provider", "storage_conn", "password", "secret", ".npz"):
        assert private not in text
    assert participant["type"] == "workflow"
    assert participant["workflow"]["stages"][0]["input"][0]["id"] == "did:nv:" + "bb" * 32
