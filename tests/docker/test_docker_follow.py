"""Following a container's log on the real engine by position (``DockerLauncher.log_since``): every line
once, in order, though the workload writes in bursts (many lines stamped within one millisecond), on two
streams, and ends with an unterminated line; the engine sends each line about once, not the log again on
every read."""

from __future__ import annotations

import time
from typing import Any

from airflow_nevermined_fl.devtools import images
from airflow_nevermined_fl.gateway.launchers.base import Labels, Workload
from airflow_nevermined_fl.gateway.launchers.docker import DockerLauncher

LINES, BURST = 20_000, 16_000
SCRIPT = f"""
import sys, time
for i in range({LINES}):
    print(f"out {{i}}")
    if i % 10 == 0:
        print(f"err {{i}}", file=sys.stderr)
    if i >= {BURST} and i % 100 == 0:
        time.sleep(0.1)
sys.stdout.write("unterminated")
"""
"""A burst, then lines over about 4 s."""
PERIOD = 0.5
"""A gateway follow's period (``Executions.follow``)."""


class CountingLogs:
    """The engine client's ``logs``, counting the bytes it returns."""

    def __init__(self, launcher: DockerLauncher) -> None:
        self.logs, self.read = launcher.client.logs, 0

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        raw: bytes = self.logs(*args, **kwargs)
        self.read += len(raw)
        return raw


def follow(launcher: DockerLauncher, workload: Workload) -> list[str]:
    """What a gateway's follow sends: reads by position until the workload ended and nothing is left."""
    text, offset = [], 0
    while True:
        running = launcher.status(workload).running
        while True:
            chunk, offset = launcher.log_since(workload, offset, not running)
            if not chunk:
                break
            text.append(chunk)
        if not running:
            return "".join(text).splitlines()
        time.sleep(PERIOD)


def test_follow_by_position_sends_every_line_once(engine: Any, docker_conn: str) -> None:
    image = images.build_base_image(engine)
    container = engine.create_container(image, command=["python3", "-u", "-c", SCRIPT])["Id"]
    launcher = DockerLauncher(docker_conn)
    counting = CountingLogs(launcher)
    launcher.client.logs = counting  # type: ignore[method-assign]
    try:
        engine.start(container)
        labels = Labels("follow-test", "run", "task", "participant", "follow")
        lines = follow(launcher, Workload("docker", container, labels, "127.0.0.1", time.time()))
        stamped = len(engine.logs(container, stdout=True, stderr=True, timestamps=True))
    finally:
        engine.remove_container(container, force=True)
    assert [line for line in lines if line.startswith("out ")] == [f"out {i}" for i in range(LINES)]
    assert [line for line in lines if line.startswith("err ")] == [f"err {i}" for i in range(0, LINES, 10)]
    assert lines[-1] == "unterminated"
    assert len(lines) == LINES + LINES // 10 + 1
    assert counting.read < 2 * stamped, (counting.read, stamped)  # re-reading the log on each read: ~8x
