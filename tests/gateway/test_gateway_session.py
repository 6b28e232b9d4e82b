"""One FL session through two gateways (a coordinator, one participant on an S3 dataset): the consumer only
signs requests and announces the coordinator; each provider's gateway launches on its own backend and, on
completion, settles with its own key (compute fulfilled, escrow released to it)."""

from __future__ import annotations

from typing import Any

from gatewaystack import Consumer, Gateway, wait_for

from airflow_nevermined_fl.devtools import data


def test_session_settled_by_the_providers(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    s3_dataset: str,
    session_id: str,
    secrets_of: list[str],
) -> None:
    model = data.softmax_model(manifest)
    keeper = consumer.keeper
    before = {gw.name: keeper.token_balance(gw.address) for gw in (coordinator_gw, data_gw)}

    seats = [data_gw.asset("provider-1-s3")["did"]]
    coordinator_did = consumer.coordinator_workflow(coordinator_gw, session_id, model, seats)
    coordinator = consumer.agreement(coordinator_gw, "coordinator")
    coordinator_client = consumer.client(coordinator_gw)
    coordinator_client.execute(coordinator, coordinator_did)
    up = wait_for(
        lambda: (s := coordinator_client.status(coordinator["agreement_id"]))["announcement"] and s,
        60,
        "coordinator up",
    )
    consumer.annotate(
        coordinator_did, coordinatorUrl=up["coordinator_url"], coordinatorAnnouncement=up["announcement"]
    )

    participant_did = consumer.participant_workflow(
        data_gw, "provider-1-s3", session_id, coordinator_did, model
    )
    participant = consumer.agreement(data_gw, "provider-1-s3")
    participant_client = consumer.client(data_gw)
    assert participant_client.execute(participant, participant_did)["role"] == "participant"
    followed = "".join(participant_client.follow_logs(participant["agreement_id"]))  # ends with the workload
    assert "Session finished" in followed and s3_dataset not in followed

    def settled(client: Any, agreement: dict[str, Any]) -> Any:
        return wait_for(
            lambda: (s := client.status(agreement["agreement_id"]))["settlement"]["settled"] and s,
            90,
            f"settlement of {agreement['agreement_id']}",
        )

    done = settled(coordinator_client, coordinator)
    assert done["state"] == "finished" and done["coordinator"]["state"] == "FINISHED"
    assert done["coordinator"]["model"]["url"].startswith(
        f"s3://nvfl/sessions/{coordinator['agreement_id']}/"
    )
    assert done["settlement"]["compute_tx"] and done["settlement"]["release_tx"]
    trained = settled(participant_client, participant)
    assert (trained["state"], trained["exit_code"], trained["coordinator"]) == ("finished", 0, None)

    for agreement in (coordinator, participant):
        assert keeper.condition_states(agreement) == {
            "compute": "fulfilled",
            "lock": "fulfilled",
            "escrow": "fulfilled",
        }
    assert keeper.token_balance(coordinator_gw.address) == before["coordinator"] + keeper.token.base(10)
    assert keeper.token_balance(data_gw.address) == before["provider-1"] + keeper.token.base("7.5")

    stopped = coordinator_client.stop(coordinator["agreement_id"])  # the lingering coordinator
    assert stopped["state"] == "finished" and stopped["settlement"] == done["settlement"]
    for secret in secrets_of:
        assert secret not in followed + str(done) + str(trained)
