"""Start the coordinator and the participants (never blocking on them) and tear everything down."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.launchers import WorkloadSpec
from airflow_nevermined_fl.operators.base import (
    SessionOperator,
    as_list,
    by_name,
    launcher,
    metadata_store,
    nevermined,
)
from airflow_nevermined_fl.operators.payment import gateway_check, refund

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook
    from airflow_nevermined_fl.metadata import MetadataStore

LOG_TAIL = 40


def _image(container: dict[str, Any]) -> str:
    """``name:tag`` of a DDO container (what container backends run)."""
    return f"{container['image']}:{container['tag']}"


def _module(entrypoint: str) -> str:
    """The runtime module of a DDO container entrypoint ``python -m <module>``."""
    parts = entrypoint.split()
    if parts[:2] != ["python", "-m"] or len(parts) != 3:
        raise AirflowFailException(f"unsupported container entrypoint in the DDO: {entrypoint!r}")
    return parts[2]


def session_prefix(session_id: str) -> str:
    """Storage prefix of a session's weights and final model."""
    return f"sessions/{session_id}"


def verified_ddo(store: MetadataStore, hook: NeverminedHook, did: str) -> dict[str, Any]:
    """The stored DDO of ``did``, its checksum matching the one registered on chain."""
    doc = store.get(did)
    on_chain = hook.get_did(did).checksum
    if on_chain.lower() != ddo.ddo_checksum(doc).lower():
        raise AirflowFailException(f"{did}: stored DDO does not match the checksum registered on chain")
    return doc


def coordinator_config(
    parameters: dict[str, Any],
    grpc: tuple[str, int],
    status: tuple[str, int],
    storage_endpoint: str,
    bucket: str,
    initial_model: str | None,
) -> dict[str, Any]:
    """The coordinator's session config, rendered from its DDO's parameters (public: no credentials)."""
    heartbeat = float(parameters["heartbeat"])
    config = {
        "session_id": parameters["sessionId"],
        "rounds": parameters["rounds"],
        "epochs": parameters["epochs"],
        "min_participants": parameters["minParticipants"],
        "fraction": parameters["participantsRatio"],
        "heartbeat_period": heartbeat,
        "heartbeat_timeout": max(5.0, 5 * heartbeat),
        "stall_timeout": parameters["stallTimeout"],
        "grpc_host": grpc[0],
        "grpc_port": grpc[1],
        "status_host": status[0],
        "status_port": status[1],
        "storage": {
            "endpoint": storage_endpoint,
            "bucket": bucket,
            "prefix": session_prefix(parameters["sessionId"]),
        },
        "model": parameters["model"] if parameters["model"]["name"] == "softmax" else {"name": "custom"},
        "linger": 600,
    }
    return {**config, "initial_model": initial_model} if initial_model else config


class StartCoordinatorOperator(SessionOperator):
    """Coordinator provider: gateway check (payment locked), launch the coordinator with the config
    rendered from the workflow DDO, and return at once (the wait is a deferred task)."""

    template_fields = ("session", "workflow", "payments")
    ui_color = "#c9e4d6"

    def __init__(self, *, workflow: Any, payments: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow = workflow
        self.payments = payments

    def execute(self, context: Context) -> dict[str, Any]:
        entry = self.conf["coordinator"]
        payment = by_name(as_list(self.payments))[entry["name"]]
        provider = nevermined(entry["conn_id"])
        gateway_check(provider, payment)
        ddos = metadata_store(self.conf["storage_conn_id"])
        store = ddos.storage
        doc = verified_ddo(ddos, provider, self.workflow["coordinator_did"])
        main = ddo.main_block(doc)
        run = launcher(entry)
        grpc_port, status_port = run.free_port(), run.free_port()
        config = coordinator_config(
            main["parameters"],
            (run.bind_host, grpc_port),
            (run.bind_host, status_port),
            store.endpoint_url,
            store.bucket,
            self._initial_model(main["parameters"]["initialModel"]),
        )
        workload = run.start(
            WorkloadSpec(
                labels=self.labels(context, "coordinator", entry["name"]),
                module=_module(main["workflow"]["coordinator"]["entrypoint"]),
                image=_image(main["workflow"]["coordinator"]),
                args=["--config", "{workdir}/session.json", "--status-file", "{workdir}/status-port"],
                ports={"grpc": grpc_port, "status": status_port},
                files={"session.json": json.dumps(config, indent=2)},
                secret_env=store.runtime_env(),
            )
        )
        self.log.info(
            "coordinator %s started on %s (%s); log: %s",
            workload.id,
            run.backend,
            workload.endpoints,
            workload.details.get("log", "see teardown"),
        )
        return {
            "coordinator_url": workload.endpoints["grpc"],
            "status_url": f"http://{workload.endpoints['status']}",
            "workload": workload.to_dict(),
        }

    def _initial_model(self, initial: str | None) -> str | None:
        """Warm start: an s3 URL as is, a model DID resolved to its (checksum-verified) file."""
        if not initial or initial.startswith("s3://"):
            return initial
        consumer = nevermined(self.conf["consumer_conn_id"])
        ddos = metadata_store(self.conf["storage_conn_id"])
        doc = verified_ddo(ddos, consumer, initial)
        model_file = ddo.main_block(doc)["files"][0]
        if "0x" + ddos.storage.sha256(model_file["url"]) != model_file["checksum"]:
            raise AirflowFailException(f"initial_model {initial}: model file checksum mismatch")
        self.log.info("warm start from %s (%s)", initial, model_file["url"])
        return model_file["url"]


class StartParticipantOperator(SessionOperator):
    """One data provider (mapped): gateway check (payment locked), then the participant is launched
    next to the provider's data and connects to the coordinator.

    The provider fulfils its ComputeExecutionCondition on completion (publish_model), not here: the
    contracts refund only an unfulfilled, timed-out compute condition, so fulfilling at launch would
    make a failed session unrefundable."""

    template_fields = ("session", "provider", "workflow", "payments", "coordinator")
    ui_color = "#c9e4d6"

    def __init__(
        self, *, provider: dict[str, Any], workflow: Any, payments: Any, coordinator: Any, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.provider = provider
        self.workflow = workflow
        self.payments = payments
        self.coordinator = coordinator

    def execute(self, context: Context) -> dict[str, Any]:
        p = self.provider
        payment = by_name(as_list(self.payments))[p["name"]]
        hook = nevermined(p["conn_id"])
        gateway_check(hook, payment)
        ddos = metadata_store(self.conf["storage_conn_id"])
        store = ddos.storage
        doc = verified_ddo(ddos, hook, self.workflow["participant_dids"][p["name"]])
        stage = ddo.main_block(doc)["workflow"]["stages"][0]
        model = stage["transformation"]["model"]
        run = launcher(p)
        workload = run.start(
            WorkloadSpec(
                labels=self.labels(context, "participant", p["name"]),
                module=_module(stage["requirements"]["container"]["entrypoint"]),
                image=_image(stage["requirements"]["container"]),
                args=[
                    "--coordinator",
                    self.coordinator["coordinator_url"],
                    "--data",
                    p["dataset"],
                    "--storage",
                    f"s3://{store.bucket}/{session_prefix(self.session_id)}",
                    "--s3-endpoint",
                    store.endpoint_url,
                    "--model",
                    model["name"],
                    "--heartbeat",
                    str(self.conf["heartbeat"]),
                    *(["--num-classes", str(model["num_classes"])] if "num_classes" in model else []),
                ],
                secret_env=store.runtime_env(),
            )
        )
        self.log.info(
            "participant %s started on %s; log: %s",
            p["name"],
            run.backend,
            workload.details.get("log", "see teardown"),
        )
        return {"name": p["name"], "workload": workload.to_dict()}


class TeardownSessionOperator(SessionOperator):
    """Teardown task: stop everything the run started (whichever step failed), put the workloads'
    log tails in this task's log, and on failure refund the consumer where the contracts allow."""

    template_fields = ("session", "payments", "published")
    ui_color = "#f3d6d6"

    def __init__(self, *, payments: Any, published: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payments = payments
        self.published = published

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        # Without a validated session (validation failed) nothing but the default backend can hold workloads.
        entries = [self.conf["coordinator"], *self.conf["data_providers"]] if self.session else []
        backends = {(e["backend"], e.get("backend_conn_id")) for e in entries} | {("local", None)}
        stopped = []
        for backend, conn_id in sorted(backends, key=str):
            run = launcher({"backend": backend, "backend_conn_id": conn_id})
            for workload in run.stop_run(ti.dag_id, ti.run_id):
                status = run.status(workload)
                stopped.append(
                    {
                        "name": workload.labels.name,
                        "role": workload.labels.role,
                        "backend": backend,
                        "exit_code": status.exit_code,
                    }
                )
                self.log.info(
                    "stopped %s %s (exit code %s); last log lines:\n%s",
                    workload.labels.role,
                    workload.labels.name,
                    status.exit_code,
                    run.logs(workload, LOG_TAIL),
                )
        refunds = self._refund() if self.session and not self.published else {}
        return {"stopped": stopped, "refunds": refunds, "session_completed": bool(self.published)}

    def _refund(self) -> dict[str, Any]:
        from airflow_nevermined_fl.contracts.errors import ChainError

        refunds: dict[str, Any] = {}
        for payment in as_list(self.payments):
            try:
                refunds[payment["name"]] = {"tx_hash": refund(self.conf["consumer_conn_id"], payment)}
            except ChainError as err:  # e.g. the agreement's time-out has not passed yet: report, go on
                self.log.warning("refund for %s not possible now: %s", payment["name"], err)
                refunds[payment["name"]] = {"tx_hash": None, "error": str(err)}
        return refunds
