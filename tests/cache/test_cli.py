"""``python -m effopt cache stats|invalidate`` on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from effopt.cache import ComputationCache, LocalBackend
from effopt.cli import main
from tests.cache.conftest import backend_spec, entry_count
from tests.cache.workers import SECRET

REPO = Path(__file__).resolve().parents[2]


def backend_args(backend) -> list[str]:
    spec = backend_spec(backend)
    if spec["kind"] == "local":
        return ["--backend", "local", "--path", spec["path"]]
    return ["--backend", "redis", "--url", spec["url"], "--prefix", spec["prefix"]]


def fill(backend) -> str:
    cache = ComputationCache(backend, SECRET, namespace="cli")

    @cache.cached(tags=("nightly",))
    def features(x):
        return list(range(x))

    features(3), features(3), features(3), features(4)
    cache.flush_stats()
    return features.__effopt_cache_spec__.name


def test_stats_table_and_json(backend, capsys):
    name = fill(backend)
    assert main(["cache", "stats", *backend_args(backend)]) == 0
    table = capsys.readouterr().out
    header, rule, row = table.splitlines()[:3]
    assert header.split()[:6] == ["namespace", "function", "hits", "misses", "hit", "rate"]
    assert row.split()[:5] == ["cli", name, "2", "2", "50.0%"]

    assert main(["cache", "stats", *backend_args(backend), "--json", "--namespace", "cli"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cli"][name]["hits"] == 2 and data["cli"][name]["misses"] == 2
    assert set(data["cli"][name]) == {"hits", "misses", "rejected", "errors", "compute_s", "saved_s", "bytes"}


def test_invalidate_by_function_and_tag(backend, capsys):
    name = fill(backend)
    assert entry_count(backend) == 2
    assert main(["cache", "invalidate", *backend_args(backend), "--tag", "nightly", "--namespace", "other"]) == 0
    assert "invalidated 0 entries" in capsys.readouterr().out
    assert main(["cache", "invalidate", *backend_args(backend), "--function", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"invalidated": 2}
    assert entry_count(backend) == 0


def test_usage_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["cache", "invalidate", "--backend", "local", "--path", str(tmp_path)]) == 2
    assert "needs --function, --namespace or --tag" in capsys.readouterr().err
    assert main(["cache", "stats", "--backend", "local", "--path", str(tmp_path / "missing")]) == 2
    assert "no local cache at" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    assert main(["cache", "stats", "--backend", "redis"]) == 2
    assert "--backend redis needs --url" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    LocalBackend(tmp_path / "c").close()
    out = subprocess.run(
        [sys.executable, "-m", "effopt", "cache", "stats", "--path", str(tmp_path / "c"), "--json"],
        env={**os.environ, "PYTHONPATH": str(REPO / "plugins")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {}
