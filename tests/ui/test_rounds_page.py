"""The rounds chart page (``airflow_nevermined_fl/plugins/static``) in a real browser, its ``rounds.json``
scripted: it draws every round, follows a running session until its run ends, shows what a failed one
got through, and shows a refusal without asking again. Against the real Airflow and a real session:
tests/dag/test_ui_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

import airflow_nevermined_fl.plugins

if TYPE_CHECKING:
    from browser import Screenshots
    from playwright.sync_api import Browser, Page, Route

STATIC = Path(airflow_nevermined_fl.plugins.__file__).with_name("static")
ORIGIN = "http://airflow.test"
RUN_ID = "manual__<img src=x onerror=alert(1)>"  # drawn as text, never as markup
PAGE = f"{ORIGIN}/nevermined-fl/rounds?dag_id=fl_session&run_id=manual__1"
Answer = tuple[int, dict[str, Any]]
READ_STATE = '() => ["run-state", "progress", "source"].map((id) => document.getElementById(id).innerText)'


def answer(run_state: str, rounds: int, source: str | None = "coordinator", scored: bool = True) -> Answer:
    """``rounds.json`` of a 3-round session with ``rounds`` of them done; ``scored``: its participants scored
    the global model they received (the built-in model does; a custom one may not)."""
    metrics = [
        {
            "round": r,
            "global_accuracy": 0.4 + r / 10 if scored else None,
            "global_loss": 2.5 / (r + 1) if scored else None,
            "loss": 2.0 / (r + 1),
            "accuracy": 0.5 + r / 10,
            "participants": 3 - r % 2,
            "refused_uploads": r % 2,
            "duration": 1.5 + r,
        }
        for r in range(rounds)
    ]
    finished = source == "xcom"
    return 200, {
        "dag_id": "fl_session",
        "run_id": RUN_ID,
        "run_state": run_state,
        "session_id": "s",
        "rounds_planned": 3,
        "source": source if rounds or finished else None,
        "coordinator_state": "FINISHED" if finished else "ROUND",
        "rounds": metrics,
        "final_accuracy": metrics[-1]["global_accuracy"] if finished else None,
        "refused_uploads": sum(m["refused_uploads"] for m in metrics),
    }


class ScriptedPlugin:
    """Serves the plugin's static page at :data:`ORIGIN` and answers its JSON polls from ``answers`` in
    turn (the last one repeats); ``polls`` counts them."""

    def __init__(self, page: Page, answers: list[Answer]) -> None:
        self.answers = answers
        self.polls = 0
        page.route(f"{ORIGIN}/**", self.handle)

    def handle(self, route: Route) -> None:
        name = urlsplit(route.request.url).path.rsplit("/", 1)[-1]
        if name == "rounds.json":
            status, body = self.answers[min(self.polls, len(self.answers) - 1)]
            self.polls += 1
            route.fulfill(status=status, json=body)
        elif name in ("rounds", "rounds.js"):
            route.fulfill(path=STATIC / ("rounds.html" if name == "rounds" else name))
        else:
            route.abort()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_a_finished_run_is_drawn_once(page: Page, screenshots: Screenshots) -> None:
    plugin = ScriptedPlugin(page, [answer("success", 3, source="xcom")])
    page.goto(PAGE)
    page.wait_for_selector("body[data-run-state=success]")
    assert page.inner_text("#progress") == "3 / 3"
    assert page.inner_text("#final-accuracy") == "0.6000"  # the global model's
    assert page.inner_text("#refused-total") == "1"
    assert page.inner_text("#run-id") == RUN_ID and page.locator("img").count() == 0
    cells = [row.locator("td").all_inner_texts() for row in page.locator("#rounds tr").all()]
    assert cells == [
        ["0", "0.4000", "2.5000", "0.5000", "2.0000", "3", "0", "1.5"],
        ["1", "0.5000", "1.2500", "0.6000", "1.0000", "2", "1", "2.5"],
        ["2", "0.6000", "0.8333", "0.7000", "0.6667", "3", "0", "3.5"],
    ]
    for chart, marks in (("loss", 6), ("accuracy", 6), ("uploads", 6), ("duration", 3)):
        assert page.locator(f"#chart-{chart} .point, #chart-{chart} .bar").count() == marks, chart
    # the global model's federated evaluation beside the local training scores
    assert page.locator("#chart-accuracy [data-key=global_accuracy] .point").count() == 3
    assert page.locator("#chart-accuracy [data-key=accuracy] .point").count() == 3
    assert page.locator("#chart-loss polyline").count() == 2
    screenshots.take(page, "finished")
    page.wait_for_timeout(2500)  # past the poll interval: a finished run is not asked again
    assert plugin.polls == 1


def test_a_running_session_is_followed_until_its_run_ends(page: Page, screenshots: Screenshots) -> None:
    answers = [answer("running", 0), answer("running", 1), answer("running", 2), answer("success", 3, "xcom")]
    plugin = ScriptedPlugin(page, answers)
    page.goto(PAGE)
    seen: list[tuple[str, str, str]] = []
    for _ in range(200):
        state = tuple(page.evaluate(READ_STATE))  # at once: a render between three reads would mix two
        if not seen or seen[-1] != state:
            seen.append(state)
            if state[1] == "1 / 3":
                screenshots.take(page, "live")
        if state[0] == "success":
            break
        page.wait_for_timeout(100)
    assert [s for s in seen if s[0] != "…"] == [
        ("running", "0 / 3", "no round yet"),
        ("running", "1 / 3", "the coordinator, live"),
        ("running", "2 / 3", "the coordinator, live"),
        ("success", "3 / 3", "the run's XComs (rounds over)"),
    ]
    assert page.locator("#chart-accuracy .point").count() == 6
    screenshots.take(page, "finished")
    assert plugin.polls == 4


def test_a_failed_run_shows_the_coordinators_last_status(page: Page) -> None:
    ScriptedPlugin(page, [answer("failed", 2, scored=False)])
    page.goto(PAGE)
    page.wait_for_selector("body[data-run-state=failed]")
    assert page.inner_text("#progress") == "2 / 3"
    assert page.inner_text("#source") == "the coordinator's last status"
    assert page.inner_text("#final-accuracy") == "–"
    assert page.locator("#rounds tr").count() == 2
    # a model that does not score the global model: no such series, no point drawn at 0
    assert page.locator("#chart-accuracy [data-key=global_accuracy]").count() == 0
    assert page.locator("#chart-accuracy .point").count() == 2


def test_a_refusal_is_shown_and_not_asked_again(page: Page) -> None:
    plugin = ScriptedPlugin(page, [(401, {"detail": "Not authenticated"})])
    page.goto(PAGE)
    page.wait_for_selector("#note:text('HTTP 401')")
    assert page.inner_text("#note") == "cannot load the rounds (HTTP 401): Not authenticated"
    page.wait_for_timeout(2500)
    assert plugin.polls == 1
