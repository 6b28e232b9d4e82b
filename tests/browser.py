"""The browser tests' real browser: Debian's chromium (``apt-get install chromium``) driven by Playwright's
Python driver, never a browser Playwright downloads. Without it the browser tests skip, unless
``NVFL_REQUIRE_BROWSER=1`` (CI) makes them fail. Screenshots go to the test's tmp dir and, when
``NVFL_ARTIFACTS`` names a directory, are copied there."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ENV = "NVFL_REQUIRE_BROWSER"
ARTIFACTS_ENV = "NVFL_ARTIFACTS"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires the browser tests to run")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless chromium (no sandbox: the tests run as root)."""
    if not CHROMIUM.exists():
        _unavailable(f"no browser at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    """Saves full-page screenshots as ``<directory>/<name>.png``, and copies them to
    ``$NVFL_ARTIFACTS/<label>/`` when that is set."""

    def __init__(self, directory: Path, label: str) -> None:
        self.directory = directory
        self.label = re.sub(r"[^\w.-]+", "_", label)

    def take(self, page: Page, name: str) -> Path:
        path = self.directory / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if artifacts := os.environ.get(ARTIFACTS_ENV):
            target = Path(artifacts) / self.label
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        return path


def login(page: Page, url: str, username: str, password: str) -> None:
    """Sign in through the Airflow UI's login form (simple auth manager); the UI keeps the JWT in the
    ``_token`` cookie."""
    page.goto(f"{url}/auth/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda current: "/auth/login" not in current)
