"""The test tiers (``tiers.py``): marks follow the fixtures a test uses, ``make test-fast`` deselects every
service mark, and a fast-tier test that reaches a service fails naming the mark it lacks."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tiers

from airflow_nevermined_fl import runtime_env
from airflow_nevermined_fl.devtools.devstack import chain, s3
from airflow_nevermined_fl.paths import PROJECT_DIR

CONFTEST = """
import pytest
import tiers

tiers.SERVICE_FIXTURES["::anvil"] = ("chain",)

def pytest_collection_modifyitems(items):
    tiers.classify(items)

@pytest.fixture(scope="session")
def anvil():
    return "rpc"

@pytest.fixture
def signer(anvil):
    return anvil
"""
TESTS = """
import pytest

def test_through_a_fixture(signer): pass

def test_plain(): pass

@pytest.mark.k8s
def test_explicit(): pass
"""


def fast_tier() -> str:
    """The ``-m`` expression of ``make test-fast``."""
    found = re.search(r"^FAST_TIER := (.+)$", (PROJECT_DIR / "Makefile").read_text(), re.MULTILINE)
    assert found, "Makefile defines no FAST_TIER"
    return found.group(1)


def collected(project: Path, expression: str) -> set[str]:
    """Test names an inner pytest collects in ``project`` under ``-m expression`` (with the real tiers.py)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", expression],
        cwd=project,
        env={"PYTHONPATH": str(Path(tiers.__file__).parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: nothing selected
    return {line.split("::")[1] for line in result.stdout.splitlines() if "::" in line}


def test_marks_follow_the_fixture_closure_and_the_fast_tier_deselects_them(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n" + "".join(f"    {n}: x\n" for n in tiers.NEEDS)
    )
    assert collected(tmp_path, "chain") == {"test_through_a_fixture"}
    assert collected(tmp_path, "k8s") == {"test_explicit"}
    assert collected(tmp_path, fast_tier()) == {"test_plain"}


def test_every_need_is_registered_and_left_out_of_the_fast_tier(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert set(tiers.NEEDS) <= registered
    assert set(re.findall(r"\w+", fast_tier())) == {"not", "or", *tiers.NEEDS}


@pytest.mark.parametrize(
    ("start", "need"),
    [
        (lambda home: chain.up(home, None), "chain"),
        (lambda home: s3.up(home, None), "s3"),
        (lambda _home: runtime_env.install(), "runtime"),
    ],
)
def test_a_fast_test_reaching_a_service_fails_naming_the_mark(
    start: Callable[[Path], object], need: str, tmp_path: Path
) -> None:
    with pytest.raises(tiers.Unmarked, match=rf"mark it @pytest\.mark\.{need}\b"):
        start(tmp_path)


def test_outside_a_fast_test_the_entry_points_call_through_and_a_tests_patch_is_undone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrapped = runtime_env.runtime_python
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime_env, "runtime_python", lambda: tmp_path)
        assert runtime_env.runtime_python() == tmp_path
    assert runtime_env.runtime_python is wrapped
    monkeypatch.setenv("NVFL_RUNTIME_VENV", str(tmp_path / "missing"))
    this = tiers.RUNNING.pop("fast")  # as while a marked test runs
    try:
        with pytest.raises(FileNotFoundError, match="FL runtime venv missing"):
            runtime_env.runtime_python()
    finally:
        tiers.RUNNING["fast"] = this
