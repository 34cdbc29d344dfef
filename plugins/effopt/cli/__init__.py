"""``effopt`` (or ``python -m effopt``): the command line.

Each command group lives in its own module with ``register(subparsers)``;
the module is imported only when its group is run, so ``--help`` stays fast.

Commands that read Airflow state use ``AIRFLOW_HOME``; when it is not set and
effopt runs from its repository checkout, that is the checkout's ``.airflow``
(the one ``make run`` uses), so nothing lands in ``~/airflow`` by accident.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

#: The repository checkout this package sits in (``<repo>/plugins/effopt/cli``), when it is one.
_CHECKOUT = Path(__file__).resolve().parents[3]

# group name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("effopt.cli.config_cmd", "check and show the [effopt] configuration"),
    "usage": ("effopt.cli.usage_cmd", "measured resource usage of Airflow task instances"),
    "store": ("effopt.cli.store_cmd", "migrate the effopt store to the newest schema"),
    "cache": ("effopt.cli.cache", "inspect and invalidate the computation cache"),
    "graph": ("effopt.cli.graph", "validate, plan, draw and run computation graphs"),
    "rightsize": ("effopt.cli.rightsize", "recommend, backtest and apply resource requests"),
    "prices": ("effopt.cli.prices", "build and show the rate table derived from cloud prices"),
    "waste": ("effopt.cli.waste", "detect and price waste, render waste reports"),
    "gpu": ("effopt.cli.gpu", "simulate GPU placement policies on cluster traces"),
    "spot": ("effopt.cli.spot", "choose spot offerings and simulate deadline-aware spot policies"),
    "standalone": ("effopt.standalone", "run Airflow standalone with the effopt bundle and plugin"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effopt", description="effopt: cheaper, faster ML on Airflow")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == wanted:
            importlib.import_module(module).register(sub.add_parser(name, help=help_text))
        else:
            sub.add_parser(name, help=help_text)
    return parser


def default_airflow_home() -> None:
    """Set ``AIRFLOW_HOME`` to the checkout's ``.airflow`` (``make run``'s) when unset and run from a checkout."""
    if "AIRFLOW_HOME" not in os.environ and (_CHECKOUT / "Makefile").is_file() and (_CHECKOUT / "dags").is_dir():
        os.environ["AIRFLOW_HOME"] = str(_CHECKOUT / ".airflow")


def main(argv: list[str] | None = None) -> int:
    """Run a command.  A bad input is one line on stderr and exit code 2 (as argparse's own errors), never a
    traceback: commands say it with ``raise SystemExit("error: ...")``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    default_airflow_home()
    args = build_parser(argv).parse_args(argv)
    if not hasattr(args, "func"):
        build_parser([args.group]).parse_args([args.group, "--help"])
    try:
        return int(args.func(args) or 0)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code if exc.code.startswith("error:") else f"error: {exc.code}", file=sys.stderr)
            return 2
        raise


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN: ``null`` is undefined)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON for ``--json`` output: always valid JSON (``null`` for undefined figures, never NaN)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
