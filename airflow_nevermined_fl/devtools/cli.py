"""The ``nvfl`` command line. Each command group lives in its own module and is imported only when used."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        for key, value in data.items():
            print(f"{key}: {value if not isinstance(value, (dict, list)) else json.dumps(value)}")


def _error(command: str, message: object, code: int) -> int:
    """Report a failed ``nvfl <command>`` on stderr; returns its exit code."""
    print(f"nvfl {command}: error: {message}", file=sys.stderr)
    return code


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str,
    actions: Sequence[str] = (),
    actions_help: str | None = None,
) -> argparse.ArgumentParser:
    """The parser of command group ``name``, run by ``func``; its ``action`` argument when it has actions."""
    parser = sub.add_parser(name, help=help)
    if actions:
        parser.add_argument("action", choices=list(actions), help=actions_help)
    parser.set_defaults(func=func)
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _devstack(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.devtools import devstack

    if args.action == "down":
        devstack.down()
        return 0
    _print(devstack.up(backend=args.backend) if args.action == "up" else devstack.status(), args.json)
    return 0


def _add_devstack(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub,
        "devstack",
        _devstack,
        "the embedded local stack (chain, S3, provider gateways, Airflow)",
        ["up", "down", "status"],
    )
    parser.add_argument(
        "--backend",
        choices=["local", "docker"],
        help="up: where the gateways run workloads (default: as before)",
    )
    _json_flag(parser)


def _contracts(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.contracts.compile import compile_contracts

    print(compile_contracts(force=args.force))
    return 0


def _add_contracts(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub, "contracts", _contracts, "the Nevermined contracts (compiled offline, cached)", ["compile"]
    )
    parser.add_argument("--force", action="store_true", help="recompile even when cached")


def _runtime(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl import runtime_env

    _print(runtime_env.install(force=args.force), args.json)
    return 0


def _add_runtime(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub, "runtime", _runtime, "the FL runtime venv (xain-fl services, apart from Airflow)", ["install"]
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    _json_flag(parser)


def _data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from airflow_nevermined_fl.devtools import data

    try:
        manifest = data.partition(
            Path(args.out),
            args.providers,
            args.scheme,
            args.alpha,
            args.test_fraction,
            args.seed,
            args.dataset,
        )
    except data.DataError as exc:
        return _error("data partition", exc, 2)
    _print(manifest, args.json)
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub, "data", _data, "demo data: per-provider shards of a bundled dataset", ["partition"]
    )
    parser.add_argument("--providers", type=int, required=True, help="number of shards")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--scheme", default="iid", help="iid or non-iid (Dirichlet label skew)")
    parser.add_argument("--alpha", type=float, default=0.5, help="non-iid: Dirichlet concentration")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out test split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="digits", help="digits, breast_cancer, wine or iris")
    _json_flag(parser)


def _session_local(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.devtools.session_local import LocalSession, SessionLocalError

    session = LocalSession(
        participants=args.participants,
        rounds=args.rounds,
        epochs=args.epochs,
        scheme=args.scheme,
        alpha=args.alpha,
        seed=args.seed,
        heartbeat=args.heartbeat,
        min_participants=args.min_participants,
        fraction=args.fraction,
        model=args.model,
        stall_timeout=args.stall_timeout,
        timeout=args.timeout,
        s3_endpoint=args.s3_endpoint,
        bucket=args.bucket,
        strategy=args.strategy,
    )
    try:
        report = session.run()
    except SessionLocalError as exc:
        return _error("session local", exc, 2)
    _print(report, args.json)
    return 0 if report["state"] == "FINISHED" else 1


def _session_airflow(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl import session_cli

    try:
        return session_cli.main(args)
    except session_cli.CommandError as exc:
        return _error(f"session {args.action}", exc, exc.code)


def _add_session(sub: argparse._SubParsersAction) -> None:
    from airflow_nevermined_fl import session_cli  # its parsers only: the standard library

    group = sub.add_parser("session", help="FL sessions: runs on an Airflow, or one bare local session")
    commands = group.add_subparsers(dest="action", required=True)
    session_cli.add_commands(commands, _session_airflow)
    parser = commands.add_parser("local", help="one bare FL session as local processes (no Airflow)")
    parser.set_defaults(func=_session_local)
    parser.add_argument("--participants", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=3, help="local epochs per round")
    parser.add_argument("--scheme", default="non-iid", help="data split: iid or non-iid")
    parser.add_argument("--alpha", type=float, default=0.5, help="non-iid: Dirichlet concentration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heartbeat", type=float, default=0.5, help="heartbeat period, seconds")
    parser.add_argument("--min-participants", type=int, help="per round (default: all)")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction selected per round")
    parser.add_argument("--model", default="softmax", help="softmax or module:Class")
    parser.add_argument("--stall-timeout", type=float, default=60.0, help="FAILED after this long idle")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--s3-endpoint", help="S3 endpoint (default: the devstack's SeaweedFS)")
    parser.add_argument("--bucket", help="S3 bucket (with --s3-endpoint; keys from AWS_* variables)")
    parser.add_argument(
        "--strategy",
        type=json.loads,
        help='server strategy as JSON, e.g. \'{"name": "fedadam", "eta": 0.1}\' (default: fedavg)',
    )
    _json_flag(parser)


def _demo(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.devtools import demo

    result = demo.run(rounds=args.rounds, timeout=args.timeout, backend=args.backend)
    if args.json:
        _print(result, True)
    else:
        print(demo.render(result))
    return 0 if result["state"] == "success" else 1


def _add_demo(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub, "demo", _demo, "one FL session through Airflow's REST API on the embedded stack and its gateways"
    )
    parser.add_argument("--rounds", type=int, default=3, help="FL rounds (default 3)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the run")
    parser.add_argument(
        "--backend", choices=["local", "docker"], default="local", help="where the gateways run the workloads"
    )
    _json_flag(parser)


def _images(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.devtools import images

    try:
        _print(images.build_all(compose=args.all), args.json)
    except images.ImageBuildError as exc:
        return _error("images build", exc, 1)
    return 0


def _add_images(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub, "images", _images, "build the base + FL runtime images offline on $DOCKER_HOST", ["build"]
    )
    parser.add_argument("--all", action="store_true", help="also every image of docker-compose.yaml")
    _json_flag(parser)


def _kubernetes(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from airflow_nevermined_fl.gateway.launchers.k8s_config import KubernetesConfigError
    from airflow_nevermined_fl.gateway.launchers.kubernetes import KubernetesLauncher

    try:
        launcher = KubernetesLauncher(conn_id=args.conn_id)
    except KubernetesConfigError as exc:
        return _error(f"kubernetes {args.action}", exc, 2)
    if args.action == "check":
        _print(asdict(launcher.config), args.json)
        return 0
    if not (args.dag_id and args.run_id):
        return _error("kubernetes cleanup", "--dag-id and --run-id are required", 2)
    stopped = launcher.stop_run(args.dag_id, args.run_id)
    _print({"stopped": [w.id for w in stopped]}, args.json)
    return 0


def _add_kubernetes(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub,
        "kubernetes",
        _kubernetes,
        "a provider cluster: validate its connection's settings, clean up a run",
        ["check", "cleanup"],
        "cleanup: delete every object of a run",
    )
    parser.add_argument("--conn-id", required=True, help="the provider's Airflow kubernetes connection")
    parser.add_argument("--dag-id", help="cleanup: DAG id of the run")
    parser.add_argument("--run-id", help="cleanup: run id")
    _json_flag(parser)


def _compose(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.devtools import compose

    values = compose.env(args.docker_socket, compose.free_ports() if args.free_ports else None)
    if args.output == "-":
        print(compose.dotenv(values), end="")
        return 0
    try:
        compose.write_env(Path(args.output), values)
    except FileExistsError:
        return _error("compose env", f"{args.output} exists: its secrets open the stack's volumes", 2)
    print(f"wrote {args.output} (mode 0600)")
    return 0


def _add_compose(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub, "compose", _compose, "the .env of docker-compose.yaml (fresh secrets, connections)", ["env"]
    )
    parser.add_argument("--docker-socket", default="/var/run/docker.sock", help="engine socket on the host")
    parser.add_argument("--output", default=".env", help="the file to create (mode 0600), or - for stdout")
    parser.add_argument("--free-ports", action="store_true", help="ports free now instead of the defaults")


def _gateway(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl.contracts.errors import ChainError, InvalidInputError
    from airflow_nevermined_fl.gateway.config import GatewayConfigError, load
    from airflow_nevermined_fl.gateway.resources import FetchError

    try:
        config = load(args.config)
        if args.action == "serve":
            from airflow_nevermined_fl.gateway.app import serve

            serve(config)
            return 0
        from airflow_nevermined_fl.gateway.publish import publish

        assets = publish(config)
    except (GatewayConfigError, ChainError, InvalidInputError, FetchError) as exc:
        return _error(f"gateway {args.action}", exc, 2)
    if args.json:
        print(json.dumps(assets, indent=2, sort_keys=True))
        return 0
    for asset in assets:
        tx = f"registered in tx {asset['tx_hash']}" if asset["tx_hash"] else "already registered"
        print(f"{asset['name']} ({asset['type']}, price {asset['price']}): {asset['did']} {tx}")
    return 0


def _add_gateway(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub,
        "gateway",
        _gateway,
        "a provider's gateway: serve its compute API, publish its services' assets",
        ["serve", "publish"],
    )
    parser.add_argument("--config", required=True, help="the gateway's config file (JSON)")
    _json_flag(parser)


def _refund_keeper(args: argparse.Namespace) -> Any:
    """The consumer's NeverminedHook: from Airflow's connections (``--conn-id``) or a URI alone."""
    from airflow_nevermined_fl.contracts.errors import InvalidInputError
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

    if args.conn_id:
        return NeverminedHook(nevermined_conn_id=args.conn_id)
    from airflow.sdk import Connection

    uri = sys.stdin.readline().strip() if args.conn_uri == "-" else args.conn_uri
    try:
        conn = Connection.from_uri(uri, conn_id="conn-uri")
    except Exception:  # the parser's message may quote the URI, which holds the key
        raise InvalidInputError("--conn-uri: not an Airflow connection URI") from None

    class UriHook(NeverminedHook):
        def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
            return conn

    return UriHook(nevermined_conn_id=conn.conn_id)


def _refund_line(a: Any, symbol: str) -> str:
    amount = f"{a.amount} {symbol} locked for {a.provider}" if a.amount is not None else "nothing locked"
    detail = {
        "refund_due": f"compute {a.condition_states['compute']}, timed out after block {a.due_after_block}",
        "waiting": (
            f"refundable after block {a.due_after_block} (now {a.current_block})"
            if a.due_after_block is not None
            else "never refundable (time_out 0)"
        ),
        "computed": "compute fulfilled: the escrow belongs to its receivers (release pending)",
        "not_locked": "nothing to refund",
    }.get(a.status, json.dumps(a.condition_states, sort_keys=True))
    return f"  {a.agreement_id} {a.status}: {amount}; {detail}" + (f" ({a.note})" if a.note else "")


@contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """Progress logs on stderr (Airflow's logging writes them to stdout): stdout carries the result alone."""
    handlers = [
        h for h in logging.root.handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout
    ]
    for handler in handlers:
        handler.setStream(sys.stderr)
    try:
        with redirect_stdout(sys.stderr):  # structlog's loggers write to sys.stdout as bound
            yield
    finally:
        for handler in handlers:
            handler.setStream(sys.stdout)


def _refund(args: argparse.Namespace) -> int:
    from collections import Counter

    from web3.exceptions import Web3Exception

    from airflow_nevermined_fl.contracts.errors import ChainError, DeploymentError, InvalidInputError
    from airflow_nevermined_fl.contracts.recovery import open_agreements, refund_due_agreements

    try:
        with _logs_to_stderr():
            from airflow.sdk.exceptions import AirflowNotFoundException

            keeper = _refund_keeper(args)
            report = refund_due_agreements(
                keeper, from_block=args.from_block, dry_run=args.dry_run, block_chunk=args.block_chunk
            )
    except (InvalidInputError, DeploymentError, AirflowNotFoundException) as exc:
        return _error("refund", exc, 2)
    except (ChainError, OSError, Web3Exception) as exc:  # messages never carry the key
        return _error("refund", f"chain RPC failed: {type(exc).__name__}: {exc}", 3)
    due = report.due
    if args.json:
        _print(report.to_dict(), True)
        return 1 if due else 0
    counts = Counter(a.status for a in report.agreements)
    print(
        f"consumer {report.consumer} on chain {report.chain_id} at block {report.current_block}"
        f" (agreements created from block {report.from_block})"
    )
    print(f"{len(report.agreements)} agreements" + "".join(f", {n} {s}" for s, n in sorted(counts.items())))
    symbol = report.symbol
    for agreement in open_agreements(report.agreements):
        print(_refund_line(agreement, symbol))
    for r in report.refunded:
        print(
            f"refunded {r['agreement_id']}: {r['amount']} {symbol} back to the consumer (tx {r['tx_hash']})"
        )
    for f in report.failed:
        print(f"refund of {f['agreement_id']} ({f['amount']} {symbol}) failed: {f['error']}")
    if args.dry_run and due:
        total = keeper.token.format(sum(sum(a.amounts or []) for a in due))
        print(f"dry run: {len(due)} refund(s) due ({total} in all), nothing sent")
    elif due:
        print(f"{len(due)} refund(s) still due: run again")
    elif report.refunded:
        print("nothing left to refund")
    else:
        print("nothing to refund: no agreement is due" + (" (dry run)" if args.dry_run else ""))
    return 1 if due else 0


def _add_refund(sub: argparse._SubParsersAction) -> None:
    parser = _command(
        sub,
        "refund",
        _refund,
        "a consumer's locked, unreleased payments read from the chain alone: refund the timed-out ones",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--conn-uri", metavar="URI", help="the consumer's nevermined connection URI ('-': read it from stdin)"
    )
    source.add_argument("--conn-id", metavar="ID", help="the consumer's Airflow connection (nevermined)")
    parser.add_argument("--from-block", type=int, default=0, help="first block scanned for agreements")
    parser.add_argument("--block-chunk", type=int, default=10_000, help="blocks per log query")
    parser.add_argument("--dry-run", action="store_true", help="list and report, send no transaction")
    _json_flag(parser)


# Functions adding one command group each; handlers import their modules only when run.
GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_devstack,
    _add_contracts,
    _add_runtime,
    _add_data,
    _add_session,
    _add_demo,
    _add_images,
    _add_compose,
    _add_kubernetes,
    _add_gateway,
    _add_refund,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
