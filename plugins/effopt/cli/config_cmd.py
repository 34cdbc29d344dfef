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
    """The validated settings, or None after printing why they are invalid."""
    from effopt.airflow_settings import get_settings

    try:
        return get_settings()
    except ConfigError as exc:
        print(f"effopt configuration is invalid:\n{exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    if _load() is None:
        return 1
    print("effopt configuration OK")
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    settings = _load()
    if settings is None:
        return 1
    for key, value in settings.describe():
        print(f"{key} = {value}")
    return 0
