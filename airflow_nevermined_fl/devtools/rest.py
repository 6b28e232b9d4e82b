"""A small client of Airflow's REST API v2 (token from ``POST /auth/token``): trigger, wait, read XCom."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import httpx

FINISHED = ("success", "failed")


class AirflowApiError(RuntimeError):
    """A REST call answered an error; ``status_code`` and ``detail`` as Airflow sent them."""

    def __init__(self, method: str, path: str, status_code: int, detail: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class AirflowClient:
    def __init__(self, url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        response = self._http.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise AirflowApiError("POST", "/auth/token", response.status_code, response.text)
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, f"/api/v2{path}", **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise AirflowApiError(method, path, response.status_code, detail)
        return response.json() if response.content else None

    def wait_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Until the DAG is parsed (and unpaused); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                dag = self.request("GET", f"/dags/{dag_id}")
                if dag.get("is_paused"):
                    self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                return dag
            except AirflowApiError as err:
                if err.status_code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """``POST /dags/{id}/dagRuns`` with ``conf``; an invalid conf answers 400 (``AirflowApiError``)."""
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json={"conf": conf, "logical_date": None})

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def wait_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return self.request("GET", path, params={"limit": 1000})["task_instances"]

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}"
        value = self.request("GET", path, params={"map_index": map_index})["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        data = self.request("GET", path, params={"map_index": map_index, "full_content": True})
        content = data.get("content")
        if isinstance(content, list):
            return "\n".join(json.dumps(line) if not isinstance(line, str) else line for line in content)
        return str(content)
