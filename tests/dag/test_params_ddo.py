"""Session Params (JSON schema, run-start validation naming the field) and DDOs (checksums, no secrets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.params import PROPERTIES, ConfError, defaults, session_params, validate_conf


def test_every_param_has_a_description_and_a_valid_default() -> None:
    params = session_params()
    assert set(params) == set(PROPERTIES)
    for name, param in params.items():
        assert param.description, name
        assert param.resolve() == defaults()[name]
    assert validate_conf({}) == defaults()


def _provider(**changes: Any) -> dict[str, Any]:
    return {**defaults()["data_providers"][0], **changes}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"rounds": 0}, "conf.rounds: 0 is less than the minimum of 1"),
        ({"fraction": 0}, "conf.fraction: 0 is less than or equal to the minimum of 0"),
        ({"heartbeat": "fast"}, "conf.heartbeat: 'fast' is not of type 'number'"),
        ({"data_providers": []}, "conf.data_providers: [] should be non-empty"),
        (
            {"data_providers": [_provider(price=0)]},
            "conf.data_providers[0].price: 0 is less than the minimum of 1",
        ),
        (
            {"data_providers": [_provider(dataset="rel.npz")]},
            "conf.data_providers[0].dataset: 'rel.npz' does not match",
        ),
        (
            {"data_providers": [_provider(account="0x12")]},
            "conf.data_providers[0].account: '0x12' does not match",
        ),
        ({"coordinator": {"name": "c"}}, "conf.coordinator: 'conn_id' is a required property"),
        ({"model": {"name": "softmax"}}, "conf.model: 'num_features' is a required property"),
        ({"model": {"name": "x y"}}, "conf.model.name: 'x y' does not match"),
        ({"initial_model": "http://x"}, "conf.initial_model: 'http://x' does not match"),
        ({"surprise": 1}, "conf: Additional properties are not allowed ('surprise' was unexpected)"),
        ({"min_participants": 4}, "conf.min_participants: 4 exceeds the 3 data providers"),
        ({"fraction": 0.5}, "conf.fraction: 0.5 of 3 providers selects fewer than min_participants=3"),
        (
            {"data_providers": [_provider(), _provider()], "min_participants": 1},
            "conf.data_providers[1].name: name 'provider-1' is used twice",
        ),
        (
            {"coordinator": {**defaults()["coordinator"], "backend": "cloud"}},
            "conf.coordinator.backend: 'cloud'",
        ),
    ],
)
def test_bad_conf_names_the_field(conf: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfError) as err:
        validate_conf(conf)
    assert str(err.value).startswith(message), str(err.value)


def test_ddo_checksum_covers_main_only_and_detects_tampering() -> None:
    conf = validate_conf({})
    main = ddo.coordinator_main(conf, "fl-abc", "0x" + "11" * 20, "0x" + "22" * 20)
    doc = ddo.build("did:nv:" + "ab" * 32, "0x" + "11" * 20, main)
    assert doc["proof"]["checksum"] == ddo.checksum(main) == ddo.ddo_checksum(doc)
    assert main["type"] == "fl-coordinator"
    params = main["parameters"]
    assert (params["rounds"], params["minParticipants"], params["participantsRatio"]) == (3, 3, 1.0)
    assert (
        main["workflow"]["coordinator"]["entrypoint"] == "python -m airflow_nevermined_fl.runtime.coordinator"
    )
    doc["service"][0]["attributes"]["additionalInformation"]["coordinatorUrl"] = "127.0.0.1:1"
    ddo.verify(doc)  # outside the checksummed block
    doc["service"][0]["attributes"]["main"]["parameters"]["rounds"] = 99
    with pytest.raises(ValueError, match="checksum mismatch"):
        ddo.verify(doc)


def test_ddos_hold_only_public_values() -> None:
    conf = validate_conf({})
    coordinator = ddo.coordinator_main(conf, "fl-abc", "0x" + "11" * 20, "0x" + "22" * 20)
    participant = ddo.participant_main(
        "fl-abc",
        "0x" + "11" * 20,
        conf["data_providers"][0],
        "0x" + "33" * 20,
        "did:nv:" + "aa" * 32,
        "did:nv:" + "bb" * 32,
        conf["model"],
    )
    text = json.dumps([coordinator, participant])
    for private in (
        "conn_id",
        "nevermined_provider",
        "storage_conn",
        "password",
        "secret",
        conf["data_providers"][0]["dataset"],
    ):
        assert private not in text
    assert participant["type"] == "workflow"
    assert participant["workflow"]["stages"][0]["input"][0]["id"] == "did:nv:" + "bb" * 32
