"""``nvfl session run|ls|status|logs|stop``: FL session runs on a configured Airflow, over its REST API.

Airflow's URL and account come from the flags, else ``NVFL_AIRFLOW_URL`` / ``NVFL_AIRFLOW_USER``, else the
config file (``--config``, default ``$XDG_CONFIG_HOME/nvfl/airflow.json``: ``url``, ``username``,
``password``; 0600 when it holds the password). The password never comes from a flag: from
``NVFL_AIRFLOW_PASSWORD`` or that file. This module imports only the standard library until a command
runs."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from airflow_nevermined_fl.client import AirflowClient

URL_ENV, USER_ENV, PASSWORD_ENV = "NVFL_AIRFLOW_URL", "NVFL_AIRFLOW_USER", "NVFL_AIRFLOW_PASSWORD"
DEFAULT_DAG = "fl_session"
POLL = 2.0
"""Seconds between two looks at a followed run."""
WAITING = (None, "none", "scheduled", "queued", "removed")
"""Task instance states with no try to read a log of yet."""


class CommandError(Exception):
    """A session command failed: its message (never a secret) and the exit code."""

    def __init__(self, message: object, code: int) -> None:
        super().__init__(str(message))
        self.code = code


@dataclass(frozen=True)
class Settings:
    """Where Airflow is and as whom to sign in."""

    url: str
    username: str
    password: str = field(repr=False)


def config_path(environ: Mapping[str, str]) -> Path:
    """The default config file: ``$XDG_CONFIG_HOME/nvfl/airflow.json`` (``~/.config/...``)."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "nvfl" / "airflow.json"


def _config_file(path: Path, required: bool) -> dict[str, Any]:
    """The config file's settings ({} when the default one does not exist); refused when it holds the
    password and others may read it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise CommandError(f"--config {path}: no such file", 2) from None
        return {}
    except (OSError, ValueError) as err:
        raise CommandError(f"config {path}: not readable JSON ({type(err).__name__})", 2) from None
    if not isinstance(data, dict):
        raise CommandError(f"config {path}: not a JSON object", 2)
    if "password" in data and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CommandError(f"config {path} holds a password and others may read it: chmod 600 {path}", 2)
    return data


def load_settings(
    url: str | None, user: str | None, config: str | None, environ: Mapping[str, str]
) -> Settings:
    """Each setting from the flag, else the environment, else the config file."""
    path = Path(config).expanduser() if config else config_path(environ)
    file = _config_file(path, required=bool(config))
    values = {
        "url": url or environ.get(URL_ENV) or file.get("url"),
        "username": user or environ.get(USER_ENV) or file.get("username"),
        "password": environ.get(PASSWORD_ENV) or file.get("password"),
    }
    sources = {"url": f"--url or {URL_ENV}", "username": f"--user or {USER_ENV}", "password": PASSWORD_ENV}
    if missing := [f"{key} ({sources[key]})" for key, value in values.items() if not value]:
        raise CommandError(f"no Airflow {', '.join(missing)}: set them, or put them in {path}", 2)
    return Settings(**{key: str(value) for key, value in values.items()})


def parse_conf(conf: str | None, assignments: list[str]) -> dict[str, Any]:
    """The run's conf: ``conf`` (a JSON object, or ``@file`` holding one), then each ``key=value`` (value as
    JSON when it parses, else a string; a dotted key sets a nested field)."""
    result: dict[str, Any] = {}
    if conf:
        try:
            text = Path(conf[1:]).expanduser().read_text() if conf.startswith("@") else conf
            result = json.loads(text)
        except (OSError, ValueError) as err:
            raise CommandError(f"--conf: {type(err).__name__}: {err}", 2) from None
        if not isinstance(result, dict):
            raise CommandError("--conf: not a JSON object", 2)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise CommandError(f"--set {assignment!r}: expected key=value", 2)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.split(".")
        node = result
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise CommandError(f"--set {key}: {name} is not an object", 2)
        node[leaf] = value
    return result


def _short(date: str | None) -> str:
    return date[:19].replace("T", " ") if date else "-"


def _number(value: Any, fmt: str = ".4f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def render_round(r: dict[str, Any]) -> str:
    """One round's line (from the XComs or, live, the coordinator): "accuracy" is the global model's (scored
    by the participants on held-out rows), then the locally trained weights'."""
    who = r.get("participants", r.get("n_samples"))
    kind = "participants" if "participants" in r else "samples"
    extra = f"  {who} {kind}" if who is not None else ""
    return (
        f"round {r['round']}: accuracy {_number(r.get('global_accuracy'))}"
        f"  loss {_number(r.get('global_loss'))}"
        f"  (local training: accuracy {_number(r.get('accuracy'))}  loss {_number(r.get('loss'))})"
        f"{extra}  {_number(r.get('duration'), '.2f')}s"
    )


class Follower:
    """A run followed until it ends: its task states and rounds as they change, written to ``out``."""

    def __init__(self, client: AirflowClient, dag_id: str, run_id: str, out: TextIO) -> None:
        self.client, self.dag_id, self.run_id, self.out = client, dag_id, run_id, out
        self.tasks: dict[str, str | None] = {}
        self.rounds = -1  # the last round written
        self.live = True  # the rounds plugin answers

    def _write(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def rounds_done(self, rounds: list[dict[str, Any]]) -> None:
        for r in rounds:
            if r["round"] > self.rounds:
                self._write(render_round(r))
                self.rounds = r["round"]

    def poll(self) -> dict[str, Any]:
        """One look: the changes since the last one written; the run."""
        from airflow_nevermined_fl.session_info import task_key

        run = self.client.run(self.dag_id, self.run_id)
        for ti in self.client.task_instances(self.dag_id, self.run_id):
            key = task_key(ti)
            if ti["state"] not in WAITING and self.tasks.get(key) != ti["state"]:
                self._write(f"  {key}: {ti['state']}")
            self.tasks[key] = ti["state"]
        if self.live and run["state"] == "running":
            live = self.client.live_rounds(self.dag_id, self.run_id)
            self.live = live is not None
            self.rounds_done((live or {}).get("rounds") or [])
        return run

    def follow(self, timeout: float) -> dict[str, Any]:
        """Until the run ends (``TimeoutError`` after ``timeout`` s); the run."""
        from airflow_nevermined_fl.client import FINISHED

        deadline = time.monotonic() + timeout
        while (run := self.poll())["state"] not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {self.run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(POLL)
        return run


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _failed_tasks(summary: dict[str, Any]) -> list[str]:
    return [key for key, state in summary["tasks"].items() if state in ("failed", "upstream_failed")]


def _run(client: AirflowClient, args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.session_info import session_summary

    conf = parse_conf(args.conf, args.set)
    run = client.trigger(args.dag, conf)
    run_id = run["dag_run_id"]
    out = sys.stderr if args.json else sys.stdout
    print(f"run {run_id} of {args.dag}: {run['state']}", file=out, flush=True)
    if not args.wait:
        if args.json:
            _print_json({"dag_id": args.dag, "run_id": run_id, "state": run["state"]})
        return 0
    follower = Follower(client, args.dag, run_id, out)
    run = follower.follow(args.timeout)
    summary = session_summary(client, args.dag, run_id)
    if args.json:
        _print_json({"dag_id": args.dag, "run_id": run_id, "state": run["state"], **summary})
    else:
        follower.rounds_done(summary.get("rounds") or [])
        print(f"run {run_id}: {run['state']}")
        if summary.get("final_accuracy") is not None:
            print(f"final accuracy: {summary['final_accuracy']:.4f}")
        if summary.get("model_did"):
            print(f"model: {summary['model_did']}")
        if failed := _failed_tasks(summary):
            print(f"failed tasks: {', '.join(failed)}")
    return 0 if run["state"] == "success" else 1


def _ls(client: AirflowClient, args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.session_info import run_row

    rows = [run_row(client, args.dag, run) for run in client.list_runs(args.dag, args.limit)]
    if args.json:
        _print_json(rows)
        return 0
    width = max([len("RUN ID"), *(len(r["run_id"]) for r in rows)])
    print(f"{'RUN ID':<{width}}  {'STATE':<8}  {'STARTED':<19}  {'ENDED':<19}  ROUNDS  ACCURACY")
    for r in rows:
        rounds = r["rounds"] if r["rounds"] is not None else "-"
        print(
            f"{r['run_id']:<{width}}  {r['state']:<8}  {_short(r['start_date']):<19}  "
            f"{_short(r['end_date']):<19}  {rounds:>6}  {_number(r['final_accuracy'])}"
        )
    return 0


def _status_lines(run: dict[str, Any], summary: dict[str, Any]) -> Iterator[str]:
    yield f"run {run['dag_run_id']} of {run['dag_id']}: {run['state']}"
    yield f"started {_short(run['start_date'])}, ended {_short(run['end_date'])}"
    yield "tasks:"
    width = max((len(key) for key in summary["tasks"]), default=0)
    for key, state in summary["tasks"].items():
        yield f"  {key:<{width}}  {state or '-'}"
    planned = summary.get("rounds_planned")
    rounds = summary.get("rounds") or []
    yield f"rounds: {len(rounds)}" + (f" of {planned}" if planned else "")
    yield from (f"  {render_round(r)}" for r in rounds)
    if summary.get("final_accuracy") is not None:
        yield f"final accuracy: {summary['final_accuracy']:.4f}"
    yield f"model: {summary.get('model_did') or '-'}"
    if summary["payments"]:
        yield "payments (tokens; lock -> release):"
    for p in summary["payments"]:
        yield f"  {p['name']:<12} {p['price']:>6}  lock {p['lock_tx']}  release {p['release_tx'] or '-'}"
    if teardown := summary.get("teardown"):
        yield from _teardown_lines(teardown)


def _teardown_lines(teardown: dict[str, Any]) -> Iterator[str]:
    """What the teardown task did (its XCom): the workloads it stopped, each refund's outcome."""
    stopped = ", ".join(f"{w['name']} ({w.get('state') or w.get('error')})" for w in teardown["stopped"])
    yield f"teardown: stopped {stopped or 'nothing'}"
    for name, refund in teardown["refunds"].items():
        yield f"  refund of {name}: {refund['outcome']}"


def _status(client: AirflowClient, args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.session_info import session_summary

    run = client.run(args.dag, args.run_id)
    summary = session_summary(client, args.dag, args.run_id)
    live = client.live_rounds(args.dag, args.run_id)
    if live:
        summary["rounds_planned"] = live.get("rounds_planned")
        if "rounds" not in summary:  # not over: the coordinator's rounds so far
            summary["rounds"] = live.get("rounds") or []
    if args.json:
        _print_json({"run": run, **summary})
    else:
        print("\n".join(_status_lines(run, summary)))
    return 0


def _log_sources(
    client: AirflowClient, args: argparse.Namespace
) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(header, task instance, try) of each log the flags select, in the order the tries started."""
    from airflow_nevermined_fl.session_info import task_key

    tis = client.task_instances(args.dag, args.run_id)
    if args.task and not any(ti["task_id"] == args.task for ti in tis):
        raise CommandError(f"run {args.run_id} has no task {args.task!r}", 2)
    chosen = [
        ti
        for ti in tis
        if (not args.task or ti["task_id"] == args.task)
        and (args.map_index is None or ti["map_index"] == args.map_index)
        and ti["state"] not in WAITING
    ]
    for ti in sorted(chosen, key=lambda ti: ti["start_date"] or "~"):
        for try_number in [args.try_number] if args.try_number else range(1, ti["try_number"] + 1):
            yield f"==> {task_key(ti)} try {try_number} ({ti['state']}) <==", ti, try_number


def _logs(client: AirflowClient, args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.client import FINISHED
    from airflow_nevermined_fl.session_info import task_key

    printed: dict[tuple[str, int], int] = {}  # lines written per log (task instance, try)
    last = None  # the log written last
    deadline = time.monotonic() + args.timeout
    while True:
        finished = not args.follow or client.run(args.dag, args.run_id)["state"] in FINISHED
        for header, ti, try_number in _log_sources(client, args):
            text = client.task_log(args.dag, args.run_id, ti["task_id"], try_number, ti["map_index"])
            key = (task_key(ti), try_number)  # not the header: it shows the state, which changes
            lines = text.splitlines()[printed.get(key, 0) :]
            if lines and key != last:
                print(header)
                last = key
            for line in lines:
                print(line)
            printed[key] = printed.get(key, 0) + len(lines)
        sys.stdout.flush()
        if finished:  # the last pass ran after the run's end
            return 0
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {args.run_id} still going after {args.timeout:.0f}s")
        time.sleep(POLL)


def _stop(client: AirflowClient, args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.client import FINISHED
    from airflow_nevermined_fl.session_info import session_summary, stop_session

    state = client.run(args.dag, args.run_id)["state"]
    if state in FINISHED:
        raise CommandError(f"run {args.run_id} already ended ({state}): nothing to stop", 2)
    failed = stop_session(client, args.dag, args.run_id)
    if not failed:
        raise CommandError(f"run {args.run_id}: no step could be marked failed (has it just ended?)", 1)
    print(f"run {args.run_id} stopped: {', '.join(failed)} marked failed")
    print(
        "the teardown stops the workloads and refunds the unpaid payments once their time-out passed on chain"
    )
    if not args.wait:
        return 0
    run = Follower(client, args.dag, args.run_id, sys.stdout).follow(args.timeout)
    summary = session_summary(client, args.dag, args.run_id)
    print(f"run {args.run_id}: {run['state']}")
    if summary.get("teardown"):
        print("\n".join(_teardown_lines(summary["teardown"])))
    # A teardown skipped (every lock skipped) or upstream_failed (none succeeded: Airflow's rule for a
    # teardown, ``all_done_setup_success``): nothing was locked, nothing to refund.
    return 0 if summary["tasks"].get("teardown") in ("success", "skipped", "upstream_failed") else 1


COMMANDS: dict[str, tuple[Callable[[AirflowClient, argparse.Namespace], int], str]] = {
    "run": (_run, "trigger a session run (--wait: follow it to its end)"),
    "ls": (_ls, "the recent session runs"),
    "status": (_status, "a run's tasks, rounds, model and payments"),
    "logs": (_logs, "a run's task logs (--follow: until it ends)"),
    "stop": (_stop, "fail a run's unfinished steps: its teardown stops the workloads and refunds"),
}


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: not a positive integer")
    return int(text)


class _RefusePassword(argparse.Action):
    """``--password``: refused without echoing it (a command line is visible to every local user)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, option_string: str | None = None) -> None:
        parser.error(
            f"{option_string} is never taken from the command line: set {PASSWORD_ENV} or use --config"
        )


def _arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dag", default=DEFAULT_DAG, help=f"the session DAG (default {DEFAULT_DAG})")
    parser.add_argument("--url", help=f"Airflow's base URL (default: ${URL_ENV}, else the config file)")
    parser.add_argument("--user", help=f"Airflow user (default: ${USER_ENV}, else the config file)")
    parser.add_argument("--config", help="config file (JSON: url, username, password; 0600)")
    parser.add_argument("--password", action=_RefusePassword, help=argparse.SUPPRESS)
    if name == "run":
        parser.add_argument("--conf", help="the run's conf: a JSON object, or @file")
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="a conf field (JSON or text)"
        )
        parser.add_argument("--wait", action="store_true", help="follow the run to its end")
    if name == "ls":
        parser.add_argument("--limit", type=_positive, default=20, help="runs listed (newest first)")
    if name in ("status", "logs", "stop"):
        parser.add_argument("run_id", metavar="RUN_ID")
    if name == "logs":
        parser.add_argument("--task", help="this task's logs only")
        parser.add_argument("--map-index", type=int, help="this mapped instance only")
        parser.add_argument("--try", dest="try_number", type=int, help="this try only")
        parser.add_argument("--follow", action="store_true", help="print new lines until the run ends")
    if name == "stop":
        parser.add_argument("--wait", action="store_true", help="wait for the teardown and the run's end")
    if name in ("run", "logs", "stop"):
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")
    if name in ("run", "ls", "status"):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_commands(sub: argparse._SubParsersAction, func: Callable[[argparse.Namespace], int]) -> None:
    """The session commands as subcommands of ``sub``, each run by ``func``."""
    for name, (_, help) in COMMANDS.items():
        parser = sub.add_parser(name, help=help)
        _arguments(name, parser)
        parser.set_defaults(func=func)


def main(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Run session command ``args.action``; its exit code (``CommandError`` with the code on a failure)."""
    from airflow_nevermined_fl.client import AirflowApiError, AirflowClient, AirflowUnreachableError

    settings = load_settings(args.url, args.user, args.config, environ)
    handler, _ = COMMANDS[args.action]
    try:
        client = AirflowClient(settings.url, settings.username, settings.password)
        try:
            return handler(client, args)
        finally:
            client.close()
    except AirflowApiError as err:
        raise CommandError(err, 2 if 400 <= err.status_code < 500 else 3) from None
    except AirflowUnreachableError as err:
        raise CommandError(f"Airflow unreachable: {err}", 3) from None
    except TimeoutError as err:
        raise CommandError(err, 4) from None
