"""``effopt store``: the effopt store's schema (migrations run on their own too, when a store is first used)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("upgrade", help="migrate the [effopt] store_url store to the newest schema, keeping every row")
    up.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from effopt.airflow_settings import get_store
    from effopt.config import mask_url
    from effopt.store import StoreUnavailable

    store = get_store()
    try:
        before, after = store.upgrade()
    except StoreUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    where = mask_url(store.url)
    if before == after:
        print(f"effopt store {where}: already at the newest schema ({after})")
    else:
        print(f"effopt store {where}: upgraded from {before or 'an empty store'} to {after}")
    return 0
