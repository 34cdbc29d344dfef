"""``python -m effopt cache stats|invalidate``: inspect and invalidate the computation cache.

The backend is the one ``[effopt]`` configures, or the one named with
``--backend local --path DIR`` / ``--backend redis --url URL``.  Neither
command needs the signing secret: statistics and invalidation never read
entries.
"""

from __future__ import annotations

import argparse
import os
import sys

from effopt.cli import dumps
from effopt.cli.table import human_bytes, render


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    stats = sub.add_parser("stats", help="hits, misses and time saved per cached function")
    _backend_args(stats)
    stats.add_argument("--namespace", help="only this namespace (default: all)")
    stats.add_argument("--json", action="store_true", help="print {namespace: {function: statistics}} as JSON")
    stats.set_defaults(func=_stats)

    inv = sub.add_parser("invalidate", help="delete cached entries by function, namespace or tag")
    _backend_args(inv)
    inv.add_argument("--function", help="module.qualname of the function (every version of it)")
    inv.add_argument("--namespace", help="only entries of this namespace (alone: the whole namespace)")
    inv.add_argument("--tag", help="entries carrying this tag")
    inv.add_argument("--json", action="store_true", help='print {"invalidated": N} as JSON')
    inv.set_defaults(func=_invalidate)


def _backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=("local", "redis"), help="backend to use instead of [effopt] cache_backend"
    )
    parser.add_argument("--path", help="directory of the local backend (default: [effopt] cache_dir)")
    parser.add_argument("--url", help="Redis URL of the redis backend, e.g. redis://host:6379/0")
    parser.add_argument("--prefix", default="effopt:cache",
                        help="key prefix of the redis backend (default %(default)s)")


class _UsageError(Exception):
    pass


def _backend(args: argparse.Namespace):
    from effopt.cache import RedisBackend

    kind = args.backend or ("redis" if args.url else "local" if args.path else None)
    if kind is None:
        from effopt.hooks.cache import CacheHook

        hook = CacheHook()
        if hook.backend_kind() == "redis":
            return hook.get_backend()  # the effopt_redis connection, as the tasks use it
        return _local(hook.settings.cache_dir)
    if kind == "redis":
        if not args.url:
            raise _UsageError("--backend redis needs --url")
        return RedisBackend(args.url, prefix=args.prefix)
    if args.path:
        path = args.path
    else:
        from effopt.airflow_settings import get_settings

        path = get_settings().cache_dir
    return _local(path)


def _local(path: str):
    from effopt.cache import LocalBackend

    if not os.path.isfile(os.path.join(path, "index.sqlite3")):
        raise _UsageError(f"no local cache at {path} (nothing has been cached there yet)")
    return LocalBackend(path, max_bytes=None)


def _open(args: argparse.Namespace):
    from effopt.cache import BackendError

    try:
        return _backend(args)
    except (_UsageError, BackendError, ValueError) as exc:
        print(f"effopt cache: {exc}", file=sys.stderr)
        return None


def _stats(args: argparse.Namespace) -> int:
    from effopt.cache import BackendError

    backend = _open(args)
    if backend is None:
        return 2
    problems: list[str] = []
    try:
        stats = backend.read_stats(args.namespace, problems)
    except BackendError as exc:
        print(f"effopt cache: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    for problem in problems:
        print(f"warning: repaired corrupted cache statistics: {problem}", file=sys.stderr)
    if args.json:
        print(dumps(stats, indent=2, sort_keys=True))
        return 0
    rows = []
    for ns, functions in sorted(stats.items()):
        for fn, s in sorted(functions.items()):
            calls = s["hits"] + s["misses"]
            rate = f"{100 * s['hits'] / calls:.1f}%" if calls else "-"
            rows.append(
                (
                    ns,
                    fn,
                    s["hits"],
                    s["misses"],
                    rate,
                    s["rejected"],
                    s["errors"],
                    s["compute_s"],
                    s["saved_s"],
                    human_bytes(s["bytes"]),
                )
            )
    if not rows:
        print(f"no cache statistics recorded yet in {backend.describe()}")
        return 0
    print(
        render(
            ("namespace", "function", "hits", "misses", "hit rate", "rejected", "errors", "compute s", "saved s",
             "bytes"),
            rows,
        )
    )
    return 0


def _invalidate(args: argparse.Namespace) -> int:
    from effopt.cache import BackendError

    if args.function is None and args.namespace is None and args.tag is None:
        print("effopt cache: invalidate needs --function, --namespace or --tag", file=sys.stderr)
        return 2
    backend = _open(args)
    if backend is None:
        return 2
    try:
        count = backend.invalidate(namespace=args.namespace, function=args.function, tag=args.tag)
    except (BackendError, ValueError) as exc:
        print(f"effopt cache: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    if args.json:
        print(dumps({"invalidated": count}))
    else:
        filters = (("function", args.function), ("namespace", args.namespace), ("tag", args.tag))
        what = ", ".join(f"{k}={v}" for k, v in filters if v is not None)
        print(f"invalidated {count} entr{'y' if count == 1 else 'ies'} ({what}) in {backend.describe()}")
    return 0
