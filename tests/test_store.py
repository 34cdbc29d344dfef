"""The effopt store on SQLite files (the embedded default)."""

from __future__ import annotations

import dataclasses

import pytest

from effopt.store import EffoptStore, StoreUnavailable, TaskUsageRecord


def _record(**over) -> TaskUsageRecord:
    base = dict(dag_id="d", task_id="t", run_id="r1", map_index=-1, try_number=1, hostname="h", pid=1,
                start=100.0, end=102.5, wall_s=2.5, cpu_user_s=1.0, cpu_sys_s=0.25, cpu_s=1.25,
                peak_rss_bytes=300 << 20, rss_start_bytes=100 << 20, peak_scope="span", state="success")
    base.update(over)
    return TaskUsageRecord(**base)


def test_round_trip_and_filters(tmp_path):
    store = EffoptStore(f"sqlite:///{tmp_path / 'e.db'}")
    a = _record()
    b = _record(task_id="u", start=50.0)
    c = _record(run_id="r2", start=200.0)
    for r in (a, b, c):
        store.record_task_usage(r)
    assert store.task_usage() == [b, a, c]  # oldest first
    assert store.task_usage(run_id="r1") == [b, a]
    assert store.task_usage(task_id="t", since=150) == [c]


def test_same_try_is_replaced_not_duplicated(tmp_path):
    store = EffoptStore(f"sqlite:///{tmp_path / 'e.db'}")
    store.record_task_usage(_record(state="failed"))
    store.record_task_usage(_record(state="success", cpu_s=2.0))
    store.record_task_usage(_record(try_number=2))
    rows = store.task_usage()
    assert [(r.try_number, r.state) for r in rows] == [(1, "success"), (2, "success")]
    assert rows[0].cpu_s == 2.0


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+pysqlite"])
def test_sqlite3_fast_path_and_engine_path_write_the_same_rows(tmp_path, scheme):
    """``sqlite:///PATH`` writes usage through the sqlite3 module, ``sqlite+pysqlite:///PATH`` through the
    engine: the same upsert, the same rows."""
    store = EffoptStore(f"{scheme}:///{tmp_path / 'e.db'}")
    store.record_task_usage(_record(state="failed"))
    store.record_task_usage(_record(state="success", cpu_s=2.0))
    store.record_task_usage(_record(try_number=2, task_id="u"))
    assert [(r.task_id, r.try_number, r.state, r.cpu_s) for r in store.task_usage()] == [
        ("t", 1, "success", 2.0), ("u", 2, "success", 1.25)]


def test_recording_usage_in_an_existing_sqlite_store_makes_no_engine(tmp_path):
    """A task process only records its usage: on a plain SQLite file it never pays for an engine."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    EffoptStore(url).ensure_schema()
    task_process = EffoptStore(url)
    task_process.record_task_usage(_record())
    assert task_process._engine is None
    assert [r.run_id for r in EffoptStore(url).task_usage()] == ["r1"]


def test_a_relative_sqlite_path_is_resolved_once(tmp_path, monkeypatch):
    """Like the engine, the sqlite3 path resolves a relative file when the store is made: a task that
    changes directory still writes to the same file."""
    monkeypatch.chdir(tmp_path)
    store = EffoptStore("sqlite:///e.db")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    store.record_task_usage(_record())
    assert (tmp_path / "e.db").exists() and not (tmp_path / "elsewhere" / "e.db").exists()
    assert len(EffoptStore(f"sqlite:///{tmp_path / 'e.db'}").task_usage()) == 1


def _write_many(url: str, worker: int, errors) -> None:
    try:
        store = EffoptStore(url)
        for n in range(10):
            store.record_task_usage(_record(task_id=f"t{worker}", run_id=f"r{n}"))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(exc).__name__}: {exc}")


def test_many_task_processes_writing_to_a_fresh_store_at_once(tmp_path):
    """The first writes race to create the schema (a table another process just created is not an
    error); then writers queue on the SQLite lock. Every record lands."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    errors = ctx.Queue()
    procs = [ctx.Process(target=_write_many, args=(url, w, errors)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == [] and all(p.exitcode == 0 for p in procs)
    assert len(EffoptStore(url).task_usage()) == 16 * 10


def test_a_failed_sqlite_write_is_rolled_back_and_releases_the_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    store = EffoptStore(url)
    store.record_task_usage(_record())
    with pytest.raises(StoreUnavailable, match="could not be written: IntegrityError"):
        store.record_task_usage(_record(run_id="r2", state=None))  # state is NOT NULL
    store.record_task_usage(_record(run_id="r3"))  # no transaction or lock was left behind
    assert [r.run_id for r in store.task_usage()] == ["r1", "r3"]


def test_second_process_sees_records(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    EffoptStore(url).record_task_usage(_record())
    assert dataclasses.asdict(EffoptStore(url).task_usage()[0])["peak_rss_bytes"] == 300 << 20


def test_unreachable_store_raises_store_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = EffoptStore(f"sqlite:///{blocker / 'e.db'}")
    with pytest.raises(StoreUnavailable, match="effopt store .* (is unavailable|could not be written)"):
        store.record_task_usage(_record())


def test_sqlite_store_is_in_wal_mode_after_the_first_write(tmp_path):
    """Task processes write while the UI reads: the file must be in WAL mode (set once, it persists)."""
    import sqlite3

    EffoptStore(f"sqlite:///{tmp_path / 'e.db'}").record_task_usage(_record())
    assert sqlite3.connect(tmp_path / "e.db").execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_waste_reports_and_deliveries(tmp_path):
    store = EffoptStore(f"sqlite:///{tmp_path / 'e.db'}")
    assert store.latest_waste_report(before=1e12) is None
    store.save_waste_report(100.0, {"totals": {"waste": 1.0}})
    store.save_waste_report(200.0, {"totals": {"waste": 2.0}})
    assert store.latest_waste_report(before=150.0) == {"totals": {"waste": 1.0}}
    assert store.latest_waste_report(before=1e12) == {"totals": {"waste": 2.0}}

    assert store.report_delivery("waste:w1:a@x") is None
    store.record_report_delivery("waste:w1:a@x", "<m1@effopt>", "a@x", 300.0)
    assert store.report_delivery("waste:w1:a@x")["message_id"] == "<m1@effopt>"
    with pytest.raises(Exception, match="UNIQUE"):  # a period's delivery is recorded once
        store.record_report_delivery("waste:w1:a@x", "<m2@effopt>", "a@x", 301.0)


def test_reading_a_store_that_does_not_exist_yet_creates_nothing(tmp_path):
    path = tmp_path / "sub" / "effopt.db"
    store = EffoptStore(f"sqlite:///{path}")
    assert store.task_usage() == [] and store.rightsizing_audit() == []
    assert store.latest_waste_report(before=1e12) is None and store.latest_rightsizing_plan() is None
    assert store.rendered_report() is None and store.report_delivery("k") is None
    assert not path.exists() and not path.parent.exists()


def test_rendered_reports_keep_the_newest_and_their_delivery(tmp_path):
    from effopt.store import RENDERED_REPORTS_KEPT

    store = EffoptStore(f"sqlite:///{tmp_path / 'e.db'}")
    ids = [store.save_rendered_report("waste", float(i), "dag", f"run{i}", {"n": i}, f"<html>{i}</html>")
           for i in range(RENDERED_REPORTS_KEPT + 3)]
    store.set_report_delivery(ids[-1], {"status": "not_sent", "detail": "no recipients"})
    newest = store.rendered_report()
    assert newest["id"] == ids[-1] and newest["html"] == f"<html>{RENDERED_REPORTS_KEPT + 2}</html>"
    assert newest["delivery"] == {"status": "not_sent", "detail": "no recipients"}
    assert store.rendered_report(ids[0]) is None and store.rendered_report(ids[3])["summary"] == {"n": 3}
    assert "html" not in store.rendered_report(html=False)
    store.save_rightsizing_plan(5.0, "effopt_rightsizing", "r1", "airflow", "effopt", {"summary": "a"})
    store.save_rightsizing_plan(6.0, "effopt_rightsizing", "r2", "airflow", "effopt", {"summary": "b"})
    assert store.latest_rightsizing_plan()["result"] == {"summary": "b"}


def test_a_locked_sqlite_store_fails_after_one_wait_not_two(tmp_path):
    """A writer holding the file: the task's write gives up after connect_timeout_s, without then waiting again on
    the schema's connection as if a table were missing (what made it cost twice the timeout)."""
    import sqlite3

    path = tmp_path / "e.db"
    EffoptStore(f"sqlite:///{path}").record_task_usage(_record())
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = EffoptStore(f"sqlite:///{path}", connect_timeout_s=0.2)
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.record_task_usage(_record())
        assert store._engine is None  # never went on to create the schema through the engine
    finally:
        holder.execute("ROLLBACK")
        holder.close()
