"""The Airflow UI in a real browser (Debian's chromium through Playwright: tests/browser.py) on the DAG
tests' Airflow and stack: the rounds chart plugin's routes refuse anonymous callers; the trigger form
refuses rounds 0 and starts a session with its rounds changed; that run's "FL rounds" tab follows the
session round by round while it runs, then shows it finished with the rounds and final accuracy of its
XComs; no answer of the plugin holds a secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
from browser import Screenshots, login
from dagstack import Api, Stack, assert_no_secrets

from airflow_nevermined_fl.devtools.devstack import airflow
from airflow_nevermined_fl.plugins.rounds import ROUND_FIELDS
from airflow_nevermined_fl.plugins.rounds_chart import URL_PREFIX

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FrameLocator, Locator, Page

    from airflow_nevermined_fl.client import AirflowClient

DAG = "fl_session"
ROUNDS = 4  # the form shows the DAG's default, 3
TAB = "FL rounds"
LIVE = "the coordinator, live"
FROM_XCOM = "the run's XComs (rounds over)"


@dataclass
class FormRun:
    """A session started through the trigger form, and what the form did with rounds 0 before."""

    run_id: str
    clamped: str  # the rounds field after typing 0
    refusal: str  # the form's error after submitting rounds 0 in its configuration JSON
    runs_before: int
    runs_after_refusal: int


def run_count(client: AirflowClient) -> int:
    return client.call(client.dag_run_api.get_dag_runs, DAG, limit=1).total_entries


def json_editor(dialog: Locator, label: str) -> Locator:
    """The JSON editor (Monaco) of the form field labelled ``label``."""
    editor = "div[contains(concat(' ', @class, ' '), ' monaco-editor ')]"
    return dialog.locator(
        f"xpath=.//*[normalize-space(text())='{label}']/ancestor::*[.//{editor}][1]//{editor}"
    ).first


def paste(page: Page, editor: Locator, text: str) -> None:
    """Replace the editor's text by pasting it (typed brackets and quotes would be closed twice)."""
    editor.click()
    page.evaluate("text => navigator.clipboard.writeText(text)", text)
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.press("ControlOrMeta+V")


def editor_text(page: Page, editor: Locator) -> str:
    editor.click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.press("ControlOrMeta+C")
    return page.evaluate("navigator.clipboard.readText()")


def trigger_form(page: Page, url: str, providers: dict[str, Any]) -> Locator:
    """The DAG's trigger dialog, its providers filled in (the test Airflow has no default ones)."""
    page.goto(f"{url}/dags/{DAG}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog").filter(has_text=f"Trigger Dag - {DAG}")
    dialog.wait_for()
    paste(page, json_editor(dialog, "coordinator"), json.dumps(providers["coordinator"]))
    paste(page, json_editor(dialog, "data_providers"), json.dumps(providers["data_providers"]))
    return dialog


@pytest.fixture(scope="module")
def ui(browser: Browser, api: Api) -> Iterator[Page]:
    """A browser page signed in to the Airflow UI as its admin."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    login(page, api.state["url"], airflow.USER, airflow.password(api.state))
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def form_run(ui: Page, api: Api, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FormRun]:
    """Through the trigger form: rounds 0 typed into its field, then into its configuration JSON and
    submitted; then a fresh form with rounds :data:`ROUNDS`, submitted. The session is over (waited for)
    before the module ends: the next tests count the consumer's transactions."""
    url, client = api.state["url"], api.client
    shots = Screenshots(tmp_path_factory.mktemp("trigger-form"), "trigger_form")
    runs_before = run_count(client)
    dialog = trigger_form(ui, url, stack.providers())
    rounds = dialog.locator("input[name=element_rounds]")
    rounds.fill("0")
    rounds.blur()
    clamped = rounds.input_value()
    dialog.get_by_role("button", name="Advanced Options").click()
    conf_editor = json_editor(dialog, "Configuration JSON")
    paste(ui, conf_editor, json.dumps(json.loads(editor_text(ui, conf_editor)) | {"rounds": 0}))
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    refusal = dialog.get_by_text("Invalid input for param rounds")
    refusal.wait_for()
    refused = refusal.inner_text()
    shots.take(ui, "rounds-0-refused")
    runs_after_refusal = run_count(client)

    dialog = trigger_form(ui, url, stack.providers())
    dialog.locator("input[name=element_rounds]").fill(str(ROUNDS))
    shots.take(ui, "rounds-changed")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.wait_for(state="hidden")
    (run,) = client.list_runs(DAG, limit=1)
    try:
        yield FormRun(run["dag_run_id"], clamped, refused, runs_before, runs_after_refusal)
    finally:
        client.wait_run(DAG, run["dag_run_id"], timeout=600)


def test_the_providers_plugin_is_loaded(api: Api) -> None:
    """Registered in the provider info; loaded because the devstack discovers providers eagerly."""
    plugins = {p.name: p for p in api.client.call(api.client.plugin_api.get_plugins).plugins}
    (view,) = plugins["nevermined_fl_rounds"].external_views
    assert view.destination == "dag_run" and view.url_route == "fl-rounds" and view.name == TAB
    assert api.client.call(api.client.plugin_api.import_errors).total_entries == 0


def test_plugin_routes_refuse_anonymous_callers(api: Api, browser: Browser, screenshots: Screenshots) -> None:
    base = f"{api.state['url']}{URL_PREFIX}"
    query = {"dag_id": DAG, "run_id": "no-such-run"}
    for path in ("rounds", "rounds.js", "rounds.json", "model-ddo"):
        anonymous = httpx.get(f"{base}/{path}", params=query)
        assert anonymous.status_code == 401, path
        assert anonymous.json() == {"detail": "Not authenticated"}
        forged = httpx.get(f"{base}/{path}", params=query, headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 403, path
        assert httpx.get(f"{base}/{path}", params=query, cookies={"_token": "forged"}).status_code == 403
    # An Airflow user's token (header or the UI's cookie) passes: the run is looked up.
    user = httpx.get(f"{base}/rounds.json", params=query, headers={"Authorization": f"Bearer {api.token()}"})
    assert user.status_code == 404 and "no-such-run" in user.json()["detail"]
    assert httpx.get(f"{base}/rounds.json", params=query, cookies={"_token": api.token()}).status_code == 404
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base}/rounds?dag_id={DAG}&run_id=no-such-run")
        assert json.loads(page.inner_text("body")) == {"detail": "Not authenticated"}
        screenshots.take(page, "anonymous")
    finally:
        context.close()


def test_trigger_form_refuses_rounds_0(form_run: FormRun) -> None:
    assert form_run.clamped == "1"  # the field keeps to the param's minimum
    assert "Invalid input for param rounds: 0 is less than the minimum of 1" in form_run.refusal
    assert form_run.runs_after_refusal == form_run.runs_before


def test_trigger_form_starts_a_session_with_the_changed_rounds(
    form_run: FormRun, api: Api, stack: Stack
) -> None:
    conf = api.client.run(DAG, form_run.run_id)["conf"]
    assert conf["rounds"] == ROUNDS
    assert {k: conf[k] for k in ("coordinator", "data_providers")} == stack.providers()


def summary(frame: FrameLocator) -> dict[str, str]:
    return {key: frame.locator(f"#{key}").inner_text() for key in ("run-state", "progress", "source")}


def test_rounds_tab_follows_the_session_then_shows_it_finished(
    ui: Page, form_run: FormRun, api: Api, stack: Stack, screenshots: Screenshots
) -> None:
    url, run_id = api.state["url"], form_run.run_id
    ui.goto(f"{url}/dags/{DAG}/runs/{quote(run_id, safe='')}")
    ui.get_by_role("link", name=TAB).click()
    frame = ui.frame_locator(f"iframe[title='{TAB}']")
    frame.locator("body[data-run-state]").wait_for()
    seen: list[dict[str, str]] = []  # the tab's summary at each change: it refreshes itself
    answers: list[str] = []  # the JSON behind it, read alongside
    live_shot = None
    bearer = {"Authorization": f"Bearer {api.token()}"}
    deadline = time.monotonic() + 600
    while (not seen or seen[-1]["run-state"] != "success") and time.monotonic() < deadline:
        now = summary(frame)
        if not seen or now != seen[-1]:
            seen.append(now)
            if live_shot is None and now["source"] == LIVE and now["progress"] != f"0 / {ROUNDS}":
                live_shot = screenshots.take(ui, "live")
        if len(answers) < 60:
            query = {"dag_id": DAG, "run_id": run_id}
            answers.append(httpx.get(f"{url}{URL_PREFIX}/rounds.json", params=query, headers=bearer).text)
        ui.wait_for_timeout(500)
    assert seen[-1]["run-state"] == "success", seen
    assert seen[0]["run-state"] in ("queued", "running"), seen
    assert any(s["source"] == LIVE for s in seen), seen
    live = [json.loads(a) for a in answers if json.loads(a)["source"] == "coordinator"]
    assert live and all(set(r) == set(ROUND_FIELDS) for a in live for r in a["rounds"])
    assert_no_secrets(stack, *answers)

    result = api.client.xcom(DAG, run_id, "wait_for_rounds")
    ui.reload()  # a finished run, opened afresh
    frame.locator("body[data-run-state=success]").wait_for()
    assert summary(frame) == {"run-state": "success", "progress": f"{ROUNDS} / {ROUNDS}", "source": FROM_XCOM}
    assert frame.locator("#final-accuracy").inner_text() == f"{result['final_accuracy']:.4f}"
    rows = [row.locator("td").all_inner_texts() for row in frame.locator("#rounds tr").all()]
    expected = [
        [str(m["round"]), *(f"{m[k]:.4f}" for k in ("global_accuracy", "global_loss", "accuracy", "loss"))]
        for m in result["rounds_metrics"]
    ]
    assert [row[:5] for row in rows] == expected and len(rows) == ROUNDS
    assert frame.locator("#chart-loss .point").count() == 2 * ROUNDS  # the global model's, local training
    assert frame.locator("#chart-uploads .bar").count() == 2 * ROUNDS
    screenshots.take(ui, "finished")
