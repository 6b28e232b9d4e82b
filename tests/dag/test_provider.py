"""The provider's Airflow surface without a chain: the coordinator sensors (poke, reschedule, deferrable,
``[operators] default_deferrable``) against the scripted gateway of ``test_triggers.py``, the model asset
(its URI scheme as Airflow normalizes it, the session DAG's inlet and outlet), and the connection forms
Airflow builds from ``get_provider_info``, which must show every field the hooks read."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    TaskDeferred,
)
from test_triggers import (  # the scripted gateway and its consumer connection
    AGREEMENT,
    AUDIENCE,
    CONN_ID,
    GatewayServer,
    Script,
    consumer_connection,  # noqa: F401  (autouse fixture)
    metrics,
    run_inline,
    running,
    serve_fixture,  # noqa: F401  (the ``serve`` fixture)
)

from airflow_nevermined_fl import get_provider_info
from airflow_nevermined_fl.assets import model_asset, sanitize_uri
from airflow_nevermined_fl.dag_factory import fl_session_dag
from airflow_nevermined_fl.sensors import coordinator as sensors
from airflow_nevermined_fl.sensors.coordinator import WaitForCoordinatorSensor, WaitForRoundsSensor
from airflow_nevermined_fl.triggers.coordinator import CoordinatorUrlTrigger, SessionRoundsTrigger

Serve = Callable[[Script], GatewayServer]
DEFERRABLE_ENV = "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"
SESSION = {
    "session_id": "s-1",
    "conf": {
        "consumer_conn_id": CONN_ID,
        "storage_conn_id": "nvfl_storage_test",
        "session_timeout": 60,
        "stall_timeout": 5,
    },
}


class Store(dict):
    """``context["task_state_store"]`` kept in memory (it outlives the sensor instances: the processes)."""

    def set(self, key: str, value: Any) -> None:
        self[key] = json.loads(json.dumps(value))  # stored as JSON, as the real one

    def delete(self, key: str) -> None:
        self.pop(key, None)


def context(store: Store | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(try_number=1, get_first_reschedule_date=lambda context: None)
    dag_run = SimpleNamespace(start_date=datetime.now(UTC))
    return {"dag_run": dag_run, "ti": ti, "task_state_store": Store() if store is None else store}


def coordinator(url: str) -> dict[str, Any]:
    """``start_coordinator``'s output: the coordinator's execution at its provider's gateway."""
    return {"name": "coordinator", "endpoint": url, "provider": AUDIENCE, "agreement_id": AGREEMENT}


def rounds_sensor(url: str, session: dict[str, Any] = SESSION, **kwargs: Any) -> WaitForRoundsSensor:
    args = {"deferrable": False, "poke_interval": 0.05}
    return WaitForRoundsSensor(
        task_id="wait_for_rounds", session=session, coordinator=coordinator(url), **{**args, **kwargs}
    )


def url_sensor(url: str, **kwargs: Any) -> WaitForCoordinatorSensor:
    args = {"deferrable": False, "poke_interval": 0.05}
    return WaitForCoordinatorSensor(
        task_id="wait_for_coordinator",
        session=SESSION,
        coordinator=coordinator(url),
        workflow={"coordinator_did": "did:nv:" + "c0" * 32},
        **{**args, **kwargs},
    )


def finishing(after: int) -> Script:
    """Two rounds finish over the polls; FINISHED from poll ``after`` on."""

    def script(n: int) -> dict[str, Any]:
        done = min(n // 3, 2)
        state = "FINISHED" if n >= after else "ROUND"
        return running({"state": state, "round": done, "rounds_metrics": metrics(done)})

    return script


@pytest.fixture
def annotated(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What the URL sensor records in the coordinator's DDO (the metadata store, without S3)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class FakeStore:
        def annotate(self, did: str, **fields: Any) -> None:
            calls.append((did, fields))

    monkeypatch.setattr(sensors, "metadata_store", lambda conn_id: FakeStore())
    return calls


# -- poke mode ----------------------------------------------------------------------------------------------


def test_poke_is_one_check_and_execute_pokes_until_finished(serve: Serve, capsys: Any) -> None:
    polls: list[int] = []

    def script(n: int) -> dict[str, Any]:
        polls.append(n)
        return finishing(after=9)(n)

    server = serve(script)
    sensor = rounds_sensor(server.url)
    assert sensor.mode == "poke" and not sensor.deferrable and sensor.poke_interval == 0.05
    first = sensor.poke(context())
    assert not first and first.xcom_value is None and polls == [1]  # one poll, no waiting

    result = rounds_sensor(server.url).execute(context())
    assert result["rounds"] == 2 and [m["round"] for m in result["rounds_metrics"]] == [0, 1]
    # "accuracy" is the global model's (federated evaluation); the local training one is named so.
    assert result["final_accuracy"] == pytest.approx(0.5)
    assert result["final_train_accuracy"] == pytest.approx(0.6)
    out = capsys.readouterr().out
    assert out.count("round 0 finished loss=1.0000 accuracy=0.5000 n_samples=9") == 1
    assert out.count("round 1 finished loss=0.5000 accuracy=0.6000 n_samples=9") == 1


@pytest.mark.parametrize(
    ("script", "conf", "error", "message"),
    [
        (
            lambda n: (
                running({"state": "ROUND", "round": 0})
                if n < 3
                else running(None, exit_code=137, state="failed")
            ),
            {},
            AirflowFailException,
            "coordinator process exited with code 137 during the session",
        ),
        (
            lambda n: running({"state": "STANDBY", "round": 0}),
            {"stall_timeout": 0.3},
            AirflowFailException,
            "session stalled: no progress for 0.3s",
        ),
        (
            lambda n: running({"state": "ROUND", "round": n}),
            {"session_timeout": 0.3},  # the session's deadline (from the run's start) comes first
            AirflowFailException,
            "session timeout: the session did not finish in time",
        ),
    ],
)
def test_rounds_sensor_fails_fast(
    serve: Serve, script: Script, conf: dict[str, Any], error: type[Exception], message: str
) -> None:
    session = {**SESSION, "conf": {**SESSION["conf"], **conf}}
    sensor = rounds_sensor(serve(script).url, session)
    with pytest.raises(error, match=message):
        sensor.execute(context())
    assert sensor.timeout == session["conf"]["session_timeout"]  # the sensor's timeout: the session's


def test_url_sensor_records_the_coordinator_then_fails_on_exit_or_timeout(
    serve: Serve, annotated: list[tuple[str, dict[str, Any]]]
) -> None:
    announcement = {"session_id": "s-1", "url": "127.0.0.1:5000", "tls_cert": "PEM", "signature": "0x1"}
    serving = running({"state": "STANDBY"}, coordinator_url="127.0.0.1:5000", announcement=announcement)
    server = serve(lambda n: serving if n > 2 else running(None))
    result = url_sensor(server.url).execute(context())
    assert result == {**coordinator(server.url), "coordinator_url": "127.0.0.1:5000"}
    assert annotated == [
        ("did:nv:" + "c0" * 32, {"coordinatorUrl": "127.0.0.1:5000", "coordinatorAnnouncement": announcement})
    ]

    exited = serve(lambda n: running(None, state="failed", exit_code=2))
    with pytest.raises(AirflowFailException, match="coordinator process exited with code 2 before serving"):
        url_sensor(exited.url).execute(context())

    never = serve(lambda n: running(None))
    with pytest.raises(AirflowSensorTimeout):
        url_sensor(never.url, timeout=0.3).execute(context())


# -- reschedule mode ----------------------------------------------------------------------------------------


def test_reschedule_mode_keeps_the_watch_between_pokes(serve: Serve, capsys: Any) -> None:
    """Each poke runs in a new process (a new sensor here); the task state store carries the watch."""
    server, store = serve(finishing(after=9)), Store()
    reschedules = 0
    while True:
        try:
            result = rounds_sensor(server.url, mode="reschedule").execute(context(store))
            break
        except AirflowRescheduleException:
            reschedules += 1
            assert set(store) == {WaitForRoundsSensor.STATE_KEY}
    assert reschedules == 8 and result["rounds"] == 2 and store == {}
    out = capsys.readouterr().out
    assert out.count("round 0 finished") == 1 and out.count("round 1 finished") == 1

    stalled, store = serve(lambda n: running({"state": "STANDBY", "round": 0})), Store()
    session = {**SESSION, "conf": {**SESSION["conf"], "stall_timeout": 0.3}}
    with pytest.raises(AirflowRescheduleException):
        rounds_sensor(stalled.url, session, mode="reschedule").execute(context(store))
    time.sleep(0.4)
    with pytest.raises(AirflowFailException, match="session stalled: no progress for 0.3s"):
        rounds_sensor(stalled.url, session, mode="reschedule").execute(context(store))


# -- deferrable ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("configured", ["True", "False", None])
def test_deferrable_defaults_to_the_airflow_config(
    monkeypatch: pytest.MonkeyPatch, configured: str | None
) -> None:
    if configured is None:
        monkeypatch.delenv(DEFERRABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(DEFERRABLE_ENV, configured)
    expected = configured == "True"
    assert rounds_sensor("http://x", deferrable=None).deferrable is expected
    assert url_sensor("http://x", deferrable=None).deferrable is expected
    waits = ("wait_for_coordinator", "wait_for_rounds")
    dag = fl_session_dag("fl_test")
    assert [dag.task_dict[t].deferrable for t in waits] == [expected, expected]
    for explicit in (True, False):  # an explicit choice wins over the configuration
        dag = fl_session_dag("fl_test", deferrable=explicit)
        assert [dag.task_dict[t].deferrable for t in waits] == [explicit, explicit]
        assert rounds_sensor("http://x", deferrable=explicit).deferrable is explicit


def test_deferrable_sensors_check_once_then_defer_to_their_triggers(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, annotated: list[tuple[str, dict[str, Any]]]
) -> None:
    monkeypatch.setenv(DEFERRABLE_ENV, "True")
    announcement = {"session_id": "s-1", "url": "127.0.0.1:5000", "tls_cert": "PEM", "signature": "0x1"}
    serving = running({"state": "STANDBY"}, coordinator_url="127.0.0.1:5000", announcement=announcement)
    server = serve(lambda n: serving if n > 1 else running(None))
    sensor, ctx = url_sensor(server.url, deferrable=None, probe_seconds=0), context()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CoordinatorUrlTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.timeout == 60 and trigger.poll_interval == 0.05
    assert deferred.value.timeout == timedelta(seconds=60 + sensors.DEFERRAL_GRACE)
    assert sensor.execute_complete(ctx, run_inline(trigger))["coordinator_url"] == "127.0.0.1:5000"
    # Serving within the probe: no deferral.
    assert url_sensor(server.url, deferrable=None).execute(ctx)["coordinator_url"] == "127.0.0.1:5000"

    rounds = serve(finishing(after=6))
    sensor = rounds_sensor(rounds.url, deferrable=None)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, SessionRoundsTrigger)
    assert trigger.deadline == pytest.approx(ctx["dag_run"].start_date.timestamp() + 60)
    assert (trigger.stall_timeout, trigger.unreachable_timeout) == (5, 5)
    assert sensor.execute_complete(ctx, run_inline(trigger))["rounds"] == 2
    event = {"status": "error", "message": "coordinator process exited with code 137 during the session"}
    with pytest.raises(AirflowFailException, match="exited with code 137 during the session"):
        sensor.execute_complete(ctx, event)
    with pytest.raises(AirflowSensorTimeout, match="not serving within"):
        sensor.execute_complete(
            ctx, {"status": "error", "message": "not serving within 1s", "reason": "timeout"}
        )


# -- the model asset ----------------------------------------------------------------------------------------


def test_the_model_asset_scheme_is_registered_and_normalized() -> None:
    from airflow.sdk import Asset
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert ProvidersManagerTaskRuntime().asset_uri_handlers["nevermined-fl"] is sanitize_uri
    assert model_asset("fl_session").uri == "nevermined-fl://models/fl_session"
    assert Asset(uri="NEVERMINED-FL://Models/fl.x-1/").uri == "nevermined-fl://models/fl.x-1"
    for bad in ("models", "model/x", "models/a/b", "models/x?y=1", "models:80/x", "user@models/x"):
        with pytest.raises(ValueError, match="expected nevermined-fl://models/<dag_id>"):
            Asset(uri=f"nevermined-fl://{bad}")


@pytest.mark.parametrize("warm_start", [False, True])
def test_a_session_dag_publishes_its_model_asset_and_warm_starts_from_it(warm_start: bool) -> None:
    asset = model_asset("fl_test")
    dag = fl_session_dag("fl_test", warm_start=warm_start)
    assert dag.task_dict["publish_model"].outlets == [asset]
    assert dag.task_dict["validate"].inlets == ([asset] if warm_start else [])


def test_the_consumer_pool_is_taken_by_every_step_sending_the_consumers_transactions() -> None:
    """Across hosts (Celery workers) the account's file lock serializes nothing: the pool does."""
    sends = {"lock_coordinator_payment", "lock_payment", "publish_workflow", "publish_model", "teardown"}
    assert {t.pool for t in fl_session_dag("fl_test").tasks} == {"default_pool"}
    pooled = fl_session_dag("fl_test", consumer_pool="nevermined_consumer")
    assert {t.task_id for t in pooled.tasks if t.pool == "nevermined_consumer"} == sends
    assert all(t.pool == "default_pool" for t in pooled.tasks if t.task_id not in sends)


# -- connection forms ---------------------------------------------------------------------------------------

CONN_ATTRIBUTES = {"host", "port", "login", "password", "schema"}


def _reads(hook: type) -> tuple[set[str], set[str]]:
    """The ``extra`` keys and the connection attributes that ``hook``'s module reads (by its source):
    ``<…extra…>.get("key")``, ``<…extra…>["key"]``, a loop over key literals doing either, ``conn.<attr>``."""
    tree = ast.parse(Path(inspect.getfile(hook)).read_text())

    def key_of(node: ast.AST) -> ast.AST | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target, args = node.func.value, node.args
            return args[0] if args and "extra" in ast.unparse(target) else None
        if isinstance(node, ast.Subscript) and "extra" in ast.unparse(node.value):
            return node.slice
        return None

    extras, attributes = set(), set()
    for node in ast.walk(tree):
        key = key_of(node)
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            extras.add(key.value)
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            looped = [key_of(n) for body in node.body for n in ast.walk(body)]
            if any(isinstance(k, ast.Name) and k.id == node.target.id for k in looped):
                extras |= {e.value for e in getattr(node.iter, "elts", []) if isinstance(e, ast.Constant)}
        if (
            isinstance(node, ast.Attribute)
            and node.attr in CONN_ATTRIBUTES
            and ast.unparse(node.value) == "conn"
        ):
            attributes.add(node.attr)
    return extras, attributes


def test_connection_forms_show_every_field_the_hooks_read() -> None:
    from airflow.providers_manager import ProvidersManager

    info = get_provider_info()
    manager = ProvidersManager()
    widgets, behaviours = manager.connection_form_widgets, manager.field_behaviours
    for form in info["connection-types"]:
        conn_type, (module, name) = form["connection-type"], form["hook-class-name"].rsplit(".", 1)
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == conn_type and hook.hook_name == form["hook-name"]
        extras, attributes = _reads(hook)
        assert extras and attributes, f"{name}: found nothing read: is the scan still right?"
        assert set(form["conn-fields"]) == extras, f"{conn_type}: form fields vs extras the hook reads"
        for field, spec in form["conn-fields"].items():
            assert spec["label"] and spec["schema"]["type"] and spec["description"], (conn_type, field)
            widget = widgets[f"extra__{conn_type}__{field}"]  # as Airflow's connection form shows it
            assert widget.field["schema"]["title"] == spec["label"] and widget.field["description"]
        hidden = set(behaviours[conn_type]["hidden_fields"])
        assert not hidden & attributes, f"{conn_type}: hides {hidden & attributes}, which the hook reads"
        assert hidden == CONN_ATTRIBUTES - attributes, f"{conn_type}: shows fields the hook never reads"


def test_provider_info_matches_airflows_schemas() -> None:
    import jsonschema
    from airflow import providers_manager

    info = get_provider_info()
    providers_manager._create_provider_info_schema_validator().validate(info)
    schema_file = Path(providers_manager.__file__).with_name("provider.yaml.schema.json")
    form = json.loads(schema_file.read_text())["properties"]["connection-types"]["items"]["properties"]
    for conn in info["connection-types"]:
        jsonschema.validate(conn["conn-fields"], form["conn-fields"])
        jsonschema.validate(conn["ui-field-behaviour"], form["ui-field-behaviour"])


@pytest.mark.parametrize(
    "template",
    [
        "https://explorer.test/tx/{tx_hash}}",
        "https://explorer.test/{block}/{tx_hash}",
        "ftp://e/{tx_hash}",
        7,
    ],
)
def test_a_bad_explorer_template_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, template: object
) -> None:
    """Read by ``validate`` (before any transaction), not first when a task's links are made."""
    from airflow_nevermined_fl.contracts.errors import InvalidInputError
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

    extra = {"explorer_tx_url": template}
    monkeypatch.setenv("AIRFLOW_CONN_NVFL_EXPLORER", json.dumps({"conn_type": "nevermined", "extra": extra}))
    with pytest.raises(InvalidInputError, match="nvfl_explorer: extra explorer_tx_url must be an http"):
        NeverminedHook("nvfl_explorer").explorer_tx_url  # noqa: B018 - the property checks
    extra["explorer_tx_url"] = "https://explorer.test/tx/{tx_hash}"
    monkeypatch.setenv("AIRFLOW_CONN_NVFL_EXPLORER", json.dumps({"conn_type": "nevermined", "extra": extra}))
    assert NeverminedHook("nvfl_explorer").explorer_tx_url == "https://explorer.test/tx/{tx_hash}"
