"""``python -m effopt config check|show``."""

from __future__ import annotations

import argparse
import sys

from effopt.config import ConfigError, markdown_table


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate [effopt]; exit 1 naming each bad key")
    check.set_defaults(func=_check)
    show = sub.add_parser("show", help="print the effective settings")
    show.add_argument("--markdown", action="store_true", help="print the option reference table instead")
    show.set_defaults(func=_show)


def _load():
    from effopt.airflow_settings import get_settings

    return get_settings()


def _check(args: argparse.Namespace) -> int:
    try:
        _load()
    except ConfigError as exc:
        print(f"effopt configuration is invalid:\n{exc}", file=sys.stderr)
        return 1
    print("effopt configuration OK")
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    try:
        settings = _load()
    except ConfigError as exc:
        print(f"effopt configuration is invalid:\n{exc}", file=sys.stderr)
        return 1
    for key, value in settings.describe():
        print(f"{key} = {value}")
    return 0
