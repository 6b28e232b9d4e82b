"""The ``nvfl`` command line. Each command group lives in its own module and is imported only when used."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        for key, value in data.items():
            print(f"{key}: {value if not isinstance(value, (dict, list)) else json.dumps(value)}")


def _devstack(args: argparse.Namespace) -> int:
    from airflow_nevermined_fl import devstack

    if args.action == "down":
        devstack.down()
        return 0
    _print(devstack.up() if args.action == "up" else devstack.status(), args.json)
    return 0


def _add_devstack(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("devstack", help="the embedded local stack (chain, S3, Airflow)")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_devstack)


# Functions adding one command group each; handlers import their modules only when run.
GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [_add_devstack]


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
