"""Stopping a detached service stops its whole process group, not only its leader."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from airflow_nevermined_fl import process

# The leader (sh) dies at SIGTERM; its child ignores SIGTERM (an ignored signal stays ignored across exec).
STUBBORN_CHILD = "(trap '' TERM; exec sleep 300) & wait"


def test_stop_waits_for_every_process_of_the_group(tmp_path: Path) -> None:
    pid = process.start(["sh", "-c", STUBBORN_CHILD], tmp_path / "log")
    try:
        time.sleep(0.5)
        assert process.group_alive(pid)
        process.stop(pid, timeout=1.0)
        assert not process.pid_alive(pid)
        assert not process.group_alive(pid)  # the child got SIGKILL once SIGTERM had not ended it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_stop_of_a_group_already_gone_is_no_error(tmp_path: Path) -> None:
    pid = process.start(["true"], tmp_path / "log")
    deadline = time.monotonic() + 10
    while process.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.stop(pid)
    assert not process.group_alive(pid)
