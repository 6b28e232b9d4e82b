"""A thin client of Airflow's REST API v2 on the official ``apache-airflow-client``: a JWT from
``POST /auth/token`` (Airflow 3's auth managers), then the client's typed calls. Answers are plain JSON
dicts (``None`` kept, dates as ISO strings); an error answer is an :class:`AirflowApiError`, an
unreachable Airflow an :class:`AirflowUnreachableError`. The password is used once, never kept."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import airflow_client.client as af
from airflow_client.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

if TYPE_CHECKING:
    from pydantic import BaseModel

FINISHED = ("success", "failed")
ROUNDS_JSON = "/nevermined-fl/rounds.json"
"""The rounds plugin's data route (``plugins/rounds_chart.py``: ``URL_PREFIX``), kept apart so that this
client imports nothing of Airflow."""
T = TypeVar("T")


class AirflowApiError(RuntimeError):
    """Airflow answered an error: ``status_code`` and ``detail`` as it sent them."""

    def __init__(self, call: str, status_code: int, detail: Any) -> None:
        super().__init__(f"{call}: HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail

    @classmethod
    def of(cls, call: str, status: int, body: bytes | str | None) -> AirflowApiError:
        """The error of an answer: its JSON ``detail`` when it has one, else its text."""
        text = body.decode(errors="replace") if isinstance(body, bytes) else body or ""
        try:
            detail = json.loads(text).get("detail", text)
        except (ValueError, AttributeError):
            detail = text
        return cls(call, status, detail)


class AirflowUnreachableError(ConnectionError):
    """No answer from Airflow at all (refused, timed out, TLS failed)."""


def plain(model: BaseModel) -> dict[str, Any]:
    """A response model as JSON-ready data: every field (``None`` kept), dates and enums as strings."""
    return model.model_dump(mode="json", by_alias=True)


def log_text(content: list[Any]) -> str:
    """A task log's lines: a structured message as ``[timestamp] LEVEL - event key=value ...``."""
    lines = []
    for message in content:
        if isinstance(message, str):
            lines.append(message)
            continue
        fields = dict(message)
        event, stamp, level = (fields.pop(key, None) for key in ("event", "timestamp", "level"))
        head = " ".join(
            part for part in (f"[{stamp}]" if stamp else "", str(level).upper() if level else "") if part
        )
        extra = "".join(f" {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in fields.items())
        lines.append(f"{head} - {event}{extra}" if head else f"{event}{extra}")
    return "\n".join(lines)


class AirflowClient:
    """Airflow at ``url`` (its base URL, without ``/api/v2``) as ``username``."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._api = af.ApiClient(af.Configuration(host=self.url))
        token = self._raw(
            "POST", "/auth/token", body={"username": username, "password": password}, auth=False
        )
        self._api.configuration.access_token = token["access_token"]
        self.dag_api = af.DAGApi(self._api)
        self.dag_run_api = af.DagRunApi(self._api)
        self.task_api = af.TaskApi(self._api)
        self.task_instance_api = af.TaskInstanceApi(self._api)
        self.xcom_api = af.XComApi(self._api)
        self.asset_api = af.AssetApi(self._api)
        self.extra_links_api = af.ExtraLinksApi(self._api)
        self.plugin_api = af.PluginApi(self._api)

    @property
    def token(self) -> str:
        """The JWT this client signed in with (``Authorization: Bearer``, or the UI's ``_token`` cookie)."""
        return str(self._api.configuration.access_token)

    def close(self) -> None:
        """Close the pooled connections (the official ``ApiClient`` has no ``close`` of its own)."""
        self._api.rest_client.pool_manager.clear()

    @contextmanager
    def _answered(self, call: str) -> Iterator[None]:
        """The official client's failures of ``call`` as :class:`AirflowApiError` (an error answer) or
        :class:`AirflowUnreachableError` (no answer)."""
        try:
            yield
        except ApiException as err:
            raise AirflowApiError.of(call, err.status or 0, err.body) from None
        except HTTPError as err:
            raise AirflowUnreachableError(f"{self.url}: {type(err).__name__}: {err}") from None

    def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One typed call of the official client: ``client.call(client.dag_run_api.get_dag_run, ...)``."""
        with self._answered(method.__name__):
            return method(*args, _request_timeout=self.timeout, **kwargs)

    def _raw(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        auth: bool = True,
    ) -> Any:
        """``method path`` (relative to :attr:`url`) for what has no typed call; its JSON answer."""
        request = self._api.param_serialize(
            method,
            path,
            query_params=list((params or {}).items()),
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["HTTPBearer"] if auth else [],
        )
        with self._answered(f"{method} {path}"):
            response = self._api.call_api(*request, _request_timeout=self.timeout)
        return self._json(f"{method} {path}", response)

    def wait_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Until the DAG is parsed (and unpaused); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                dag = self.call(self.dag_api.get_dag, dag_id)
                if dag.is_paused:
                    body = af.DAGPatchBody(is_paused=False)
                    dag = self.call(self.dag_api.patch_dag, dag_id, body, update_mask=["is_paused"])
                return plain(dag)
            except AirflowApiError as err:
                if err.status_code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """A run of ``dag_id`` with ``conf`` (no logical date); an invalid conf answers 400."""
        body = af.TriggerDAGRunPostBody(conf=conf, logical_date=None)
        return plain(self.call(self.dag_run_api.trigger_dag_run, dag_id, body))

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return plain(self.call(self.dag_run_api.get_dag_run, dag_id, run_id))

    @staticmethod
    def _json(call: str, response: Any) -> Any:
        """The JSON of an answer read raw (an error status: :class:`AirflowApiError`; no body: None)."""
        data = response.read()
        if response.status >= 400:
            raise AirflowApiError.of(call, response.status, data)
        return json.loads(data) if data else None

    def extra_links(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, str | None]:
        """A task instance's extra links by name, as the UI gets them (None: not shown). Read as JSON: the
        client's typed model refuses the null of a link not shown."""
        response = self.call(
            self.extra_links_api.get_extra_links_without_preload_content,
            dag_id,
            run_id,
            task_id,
            map_index=map_index,
        )
        return self._json("get_extra_links", response)["extra_links"]

    def list_runs(self, dag_id: str, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` newest runs of ``dag_id``, newest first."""
        runs = self.call(self.dag_run_api.get_dag_runs, dag_id, limit=limit, order_by=["-run_after"])
        return [plain(run) for run in runs.dag_runs]

    def wait_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)

    def note_run(self, dag_id: str, run_id: str, note: str) -> dict[str, Any]:
        """Set the run's note (shown in the UI)."""
        body = af.DAGRunPatchBody(note=note)
        return plain(self.call(self.dag_run_api.patch_dag_run, dag_id, run_id, body, update_mask=["note"]))

    def tasks(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's tasks (``task_id``, ``trigger_rule``, ``is_mapped``, ...)."""
        return [plain(task) for task in self.call(self.task_api.get_tasks, dag_id).tasks]

    def fail_task(self, dag_id: str, run_id: str, task_id: str, map_index: int, note: str) -> None:
        """Mark one task instance failed, as if it had failed (no retry): a running one is killed, a
        deferred one's trigger dropped; the scheduler then fails what depends on it and runs the teardown."""
        body = af.PatchTaskInstanceBody(new_state=af.TaskInstanceState.FAILED, note=note)
        self.call(
            self.task_instance_api.patch_task_instance, dag_id, run_id, task_id, body, map_index=map_index
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        tis = self.call(self.task_instance_api.get_task_instances, dag_id, run_id, limit=1000)
        return [plain(ti) for ti in tis.task_instances]

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return plain(self.call(self.task_instance_api.get_task_instance, dag_id, run_id, task_id))

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """An XCom's value (JSON-decoded as stored)."""
        entry = self.call(self.xcom_api.get_xcom_entry, dag_id, task_id, run_id, key, map_index=map_index)
        value = entry.actual_instance.value
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The whole log of one try, one line per message. Read as JSON: the client's typed model of a
        message keeps its event and timestamp only (no level, logger, error details)."""
        response = self.call(
            self.task_instance_api.get_log_without_preload_content,
            dag_id,
            run_id,
            task_id,
            try_number,
            full_content=True,
            map_index=map_index,
            accept="application/json",
        )
        return log_text(self._json("get_log", response)["content"])

    def asset_events(self, **filters: Any) -> list[dict[str, Any]]:
        """Asset events matching ``filters`` (``source_dag_id``, ``source_run_id``, ...)."""
        return [plain(e) for e in self.call(self.asset_api.get_asset_events, **filters).asset_events]

    def live_rounds(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """The run's rounds so far from this provider's rounds plugin (docs/ui.md): live from the
        coordinator while it runs. None where the plugin is not loaded or fails, or for an unknown run."""
        try:
            return self._raw("GET", ROUNDS_JSON, {"dag_id": dag_id, "run_id": run_id})
        except AirflowApiError as err:
            if err.status_code == 404 or err.status_code >= 500:  # a display aid: never fatal
                return None
            raise
