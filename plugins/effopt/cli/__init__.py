"""``python -m effopt``: the command line.

Each command group lives in its own module with ``register(subparsers)``;
the module is imported only when its group is run, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# group name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("effopt.cli.config_cmd", "check and show the [effopt] configuration"),
    "usage": ("effopt.cli.usage_cmd", "measured resource usage of Airflow task instances"),
    "cache": ("effopt.cli.cache", "inspect and invalidate the computation cache"),
    "graph": ("effopt.cli.graph", "validate, plan, draw and run computation graphs"),
    "rightsize": ("effopt.cli.rightsize", "recommend, backtest and apply resource requests"),
    "prices": ("effopt.cli.prices", "build and show the rate table derived from cloud prices"),
    "waste": ("effopt.cli.waste", "detect and price waste, render waste reports"),
    "spot": ("effopt.cli.spot", "choose spot offerings and simulate deadline-aware spot policies"),
    "standalone": ("effopt.standalone", "run Airflow standalone with the effopt bundle and plugin"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m effopt", description="effopt: cheaper, faster ML on Airflow")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == wanted:
            importlib.import_module(module).register(sub.add_parser(name, help=help_text))
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    if not hasattr(args, "func"):
        build_parser([args.group]).parse_args([args.group, "--help"])
    return int(args.func(args) or 0)
