"""``python -m effopt usage``: what the task-usage listener recorded."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from effopt.cli import dumps
from effopt.cli.table import human_bytes, render


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dag", dest="dag_id", help="only this DAG")
    parser.add_argument("--task", dest="task_id", help="only this task")
    parser.add_argument("--run", dest="run_id", help="only this DAG run")
    parser.add_argument("--limit", type=int, default=50, help="at most this many records, newest (default 50)")
    parser.add_argument("--store-url", help="read this store instead of [effopt] store_url")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.store_url:
        from effopt.store import EffoptStore

        store = EffoptStore(args.store_url)
    else:
        from effopt.airflow_settings import get_store

        store = get_store()
    records = store.task_usage(dag_id=args.dag_id, task_id=args.task_id, run_id=args.run_id)[-args.limit :]
    if args.json:
        for r in records:
            print(dumps(asdict(r)))
        return 0
    if not records:
        print("no task usage recorded yet (is the effopt plugin loaded and [effopt] task_usage_listener true?)")
        return 0
    rows = [
        (r.dag_id, r.task_id, r.run_id, r.try_number, r.state, r.wall_s, r.cpu_s, human_bytes(r.peak_rss_bytes))
        for r in records
    ]
    print(render(("dag", "task", "run", "try", "state", "wall s", "cpu s", "peak rss"), rows))
    return 0
