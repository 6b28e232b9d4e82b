"""``nvfl session run|ls|status|logs|stop`` without a real Airflow: where Airflow's URL and account come
from (flags, then the environment, then the config file), the run's conf from ``--conf``/``--set``, the
exit codes of a refused sign-in and of an unreachable Airflow, and the password in no output. The real
runs are in tests/dag/test_session_cli.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_nevermined_fl.devtools.cli import build_parser
from airflow_nevermined_fl.session_cli import (
    PASSWORD_ENV,
    URL_ENV,
    USER_ENV,
    CommandError,
    config_path,
    load_settings,
    parse_conf,
    render_round,
)

PASSWORD = "pw-Secret-4711"
NVFL = Path(sys.executable).parent / "nvfl"


def _config(path: Path, mode: int = 0o600, **values: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    path.chmod(mode)
    return path


def test_flags_then_environment_then_config_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    _config(config_path(env), url="http://file:8080", username="file-user", password=PASSWORD)
    assert config_path(env) == tmp_path / "nvfl" / "airflow.json"

    from_file = load_settings(None, None, None, env)
    assert (from_file.url, from_file.username, from_file.password) == (
        "http://file:8080",
        "file-user",
        PASSWORD,
    )
    env |= {URL_ENV: "http://env:8080", USER_ENV: "env-user", PASSWORD_ENV: "env-password"}
    from_env = load_settings(None, None, None, env)
    assert (from_env.url, from_env.username, from_env.password) == (
        "http://env:8080",
        "env-user",
        "env-password",
    )
    from_flags = load_settings("http://flag:8080", "flag-user", None, env)
    assert (from_flags.url, from_flags.username) == ("http://flag:8080", "flag-user")
    assert PASSWORD not in repr(from_file) and "env-password" not in repr(from_env)


def test_an_explicit_config_file_and_what_is_refused(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home")}
    assert config_path(env) == tmp_path / "home" / ".config" / "nvfl" / "airflow.json"
    own = _config(tmp_path / "own.json", url="http://own:8080", username="u", password=PASSWORD)
    assert load_settings(None, None, str(own), env).url == "http://own:8080"

    with pytest.raises(CommandError) as err:  # holds the password, readable by others
        load_settings(None, None, str(_config(tmp_path / "open.json", 0o644, password=PASSWORD)), env)
    assert err.value.code == 2 and "chmod 600" in str(err.value) and PASSWORD not in str(err.value)
    # Readable by others is fine without a password in it.
    assert (
        load_settings(
            None,
            None,
            str(_config(tmp_path / "np.json", 0o644, url="http://x")),
            env
            | {
                USER_ENV: "u",
                PASSWORD_ENV: PASSWORD,
            },
        ).url
        == "http://x"
    )
    with pytest.raises(CommandError, match="no such file"):
        load_settings(None, None, str(tmp_path / "missing.json"), env)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CommandError, match="not readable JSON"):
        load_settings(None, None, str(tmp_path / "bad.json"), env)
    with pytest.raises(CommandError) as err:  # nothing anywhere (no default file): each setting named
        load_settings(None, None, None, env | {PASSWORD_ENV: PASSWORD})
    assert err.value.code == 2 and URL_ENV in str(err.value) and USER_ENV in str(err.value)
    assert PASSWORD_ENV not in str(err.value) and PASSWORD not in str(err.value)


def test_conf_from_json_a_file_and_assignments(tmp_path: Path) -> None:
    (tmp_path / "conf.json").write_text('{"rounds": 3, "model": {"name": "softmax"}}')
    conf = parse_conf(
        f"@{tmp_path / 'conf.json'}",
        ["rounds=5", "heartbeat=0.5", "model.num_classes=10", "note=a=b", 'data_providers=[{"did": "d"}]'],
    )
    assert conf == {
        "rounds": 5,
        "heartbeat": 0.5,
        "model": {"name": "softmax", "num_classes": 10},
        "note": "a=b",
        "data_providers": [{"did": "d"}],
    }
    assert parse_conf('{"rounds": 2}', ["coordinator.did=did:nv:01"]) == {
        "rounds": 2,
        "coordinator": {"did": "did:nv:01"},
    }
    for conf_arg, sets, message in (
        ("[1, 2]", [], "not a JSON object"),
        ("{bad", [], "--conf: JSONDecodeError"),
        (f"@{tmp_path / 'none.json'}", [], "--conf: FileNotFoundError"),
        (None, ["rounds"], "expected key=value"),
        ('{"rounds": 2}', ["rounds.x=1"], "rounds is not an object"),
    ):
        with pytest.raises(CommandError, match=message) as err:
            parse_conf(conf_arg, sets)
        assert err.value.code == 2


def test_the_parser_has_the_session_commands_and_refuses_a_password_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    args = parser.parse_args(["session", "run", "--set", "rounds=3", "--set", "fraction=1", "--wait"])
    assert (args.action, args.set, args.wait, args.dag) == (
        "run",
        ["rounds=3", "fraction=1"],
        True,
        "fl_session",
    )
    args = parser.parse_args(["session", "logs", "run-1", "--task", "validate", "--try", "2", "--follow"])
    assert (args.run_id, args.task, args.try_number, args.follow, args.map_index) == (
        "run-1",
        "validate",
        2,
        True,
        None,
    )
    assert parser.parse_args(["session", "local", "--participants", "2", "--rounds", "1"]).action == "local"
    for argv in (["--password", PASSWORD], [f"--password={PASSWORD}"], ["--pass", PASSWORD]):
        with pytest.raises(SystemExit):
            parser.parse_args(["session", "ls", *argv])
        err = capsys.readouterr().err
        assert PASSWORD_ENV in err and PASSWORD not in err


def test_round_lines_from_xcom_and_from_the_coordinator() -> None:
    xcom = {
        "round": 1,
        "global_accuracy": 0.8125,
        "global_loss": 0.7,
        "loss": 0.51234,
        "accuracy": 0.875,
        "n_samples": 300,
        "duration": 1.234,
    }
    assert render_round(xcom) == (
        "round 1: accuracy 0.8125  loss 0.7000  (local training: accuracy 0.8750  loss 0.5123)"
        "  300 samples  1.23s"
    )
    # a model that does not score the global model (a custom or stock-SDK one): no "accuracy" to show
    live = {"round": 0, "loss": None, "accuracy": 0.5, "participants": 3, "duration": 2}
    assert render_round(live) == (
        "round 0: accuracy -  loss -  (local training: accuracy 0.5000  loss -)  3 participants  2.00s"
    )


def test_the_client_reads_the_rounds_plugin_route() -> None:
    from airflow_nevermined_fl.client import ROUNDS_JSON
    from airflow_nevermined_fl.plugins.rounds_chart import URL_PREFIX

    assert f"{URL_PREFIX}/rounds.json" == ROUNDS_JSON


def test_structured_log_lines() -> None:
    from airflow_nevermined_fl.client import log_text

    message = {
        "event": "Task failed with exception",
        "timestamp": "2025-01-01T00:00:00Z",
        "level": "error",
        "error_detail": [{"exc_type": "ValueError", "exc_value": "conf.rounds: 0"}],
    }
    assert log_text([message, "plain line", {"event": "no time"}]) == (
        '[2025-01-01T00:00:00Z] ERROR - Task failed with exception error_detail=[{"exc_type": "ValueError", '
        '"exc_value": "conf.rounds: 0"}]\nplain line\nno time'
    )


class _RefusingAirflow(BaseHTTPRequestHandler):
    """``POST /auth/token`` refused as Airflow's simple auth manager refuses a wrong password."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"detail": "Invalid credentials"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def refusing_airflow() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingAirflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _nvfl(*argv: str, url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVFL_AIRFLOW_")}
    env |= {URL_ENV: url, USER_ENV: "admin", PASSWORD_ENV: PASSWORD, "XDG_CONFIG_HOME": str(home)}
    return subprocess.run([str(NVFL), "session", *argv], capture_output=True, text=True, env=env, timeout=60)


def test_a_refused_sign_in_and_an_unreachable_airflow(refusing_airflow: str, tmp_path: Path) -> None:
    refused = _nvfl("ls", url=refusing_airflow, home=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "POST /auth/token: HTTP 401: Invalid credentials" in refused.stderr
    unreachable = _nvfl("status", "run-1", url="http://127.0.0.1:9", home=tmp_path)
    assert unreachable.returncode == 3 and "Airflow unreachable" in unreachable.stderr
    for result in (refused, unreachable):
        assert PASSWORD not in result.stdout + result.stderr
