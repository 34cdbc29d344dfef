"""Airflow task ids for graph nodes: valid, stable and readable.

A node id that is already a valid id (letters, digits, ``_`` and ``-``) of at
most ``max_length`` characters is its own task id.  Otherwise invalid
characters become ``_`` and a short hash of the original id is appended, and a
too-long id keeps its start and ends with that hash.  The id depends only on
the node's own id, so adding or removing other nodes never renames a task.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

AIRFLOW_ID_LEN = 250
_INVALID = re.compile(r"[^A-Za-z0-9_-]+")
_VALID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
HASH_LEN = 8

#: Every compiled graph's DAG id starts with this (``effopt_graph_<name>``).
DAG_ID_PREFIX = "effopt_graph_"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def task_id_for(node_id: str, max_length: int = 100) -> str:
    """The task id of ``node_id`` (see the module docstring)."""
    if not 16 <= max_length <= AIRFLOW_ID_LEN:
        raise ValueError(f"max_length must be from 16 to {AIRFLOW_ID_LEN}, not {max_length}")
    if _VALID.match(node_id) and len(node_id) <= max_length:
        return node_id
    suffix = "_" + short_hash(node_id)
    clean = _INVALID.sub("_", node_id).strip("_") or "node"
    return clean[: max_length - len(suffix)].rstrip("_") + suffix


def task_ids(node_ids: Iterable[str], max_length: int = 100) -> dict[str, str]:
    """node id -> task id for every node; raises ValueError if two nodes would share one."""
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for node_id in node_ids:
        tid = task_id_for(node_id, max_length)
        if tid in owner:
            raise ValueError(f"nodes {owner[tid]!r} and {node_id!r} both map to task id {tid!r}; rename one")
        owner[tid] = node_id
        out[node_id] = tid
    return out
