"""The embedded cache backend: a directory on this machine, shared by its processes.

Layout under ``path``::

    index.sqlite3        entries (key, size, expiry, last access), tags, statistics
    entries/ab/<hash>-<n> one file per entry version
    locks/<hash>.lock    single-flight locks (flock)
    tmp/                 files being written

Entries are written to ``tmp/`` and renamed into ``entries/`` (atomic), each
version under a new file name; the index row is switched to it in a SQLite
transaction and only then is the previous file removed, so a reader sees the
old entry or the new one, never a partial file.  SQLite runs in WAL mode, so
readers do not block writers.  The total size is bounded by ``max_bytes``:
after each write the least recently read entries are evicted.

Single-flight uses ``flock``: the kernel releases the lock when its holder
exits or is killed, so a waiter takes over at once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import xxhash

from effopt.cache.base import (
    FLOAT_STATS,
    STAT_FIELDS,
    BackendError,
    BackendLock,
    CacheBackend,
    CacheKey,
    StatsDelta,
    parse_stat,
    zero_stats,
)

__all__ = ["LocalBackend"]

log = logging.getLogger("effopt.cache")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        key TEXT PRIMARY KEY,
        namespace TEXT NOT NULL,
        function TEXT NOT NULL,
        file TEXT NOT NULL,
        size INTEGER NOT NULL,
        expires REAL,
        accessed REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS entries_accessed ON entries (accessed)",
    "CREATE INDEX IF NOT EXISTS entries_function ON entries (namespace, function)",
    "CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (tag, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS tags_key ON tags (key)",
    "CREATE TABLE IF NOT EXISTS stats (namespace TEXT NOT NULL, function TEXT NOT NULL, "
    + ", ".join(f"{f} {'REAL' if f in FLOAT_STATS else 'INTEGER'} NOT NULL DEFAULT 0" for f in STAT_FIELDS)
    + ", PRIMARY KEY (namespace, function))",
    # Statistics batches already added (a retried flush is not counted twice), kept BATCH_TTL_S.
    "CREATE TABLE IF NOT EXISTS stat_batches (id TEXT PRIMARY KEY, added REAL NOT NULL) WITHOUT ROWID",
)
#: How long a statistics batch id is remembered.
BATCH_TTL_S = 86400

_ADD_STATS = (
    f"INSERT INTO stats (namespace, function, {', '.join(STAT_FIELDS)}) "
    f"VALUES (?, ?, {', '.join('?' for _ in STAT_FIELDS)}) "
    "ON CONFLICT (namespace, function) DO UPDATE SET "
    + ", ".join(f"{f} = {f} + excluded.{f}" for f in STAT_FIELDS)
)


def _key_hash(key: CacheKey) -> str:
    return xxhash.xxh3_128_hexdigest(str(key).encode())


class _FileLock(BackendLock):
    needs_extension = False

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self._path = path

    def extend(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock: a waiter that opened the old
        # file notices the inode changed and retries (see LocalBackend.try_lock).
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


class LocalBackend(CacheBackend):
    """Entries in the directory ``path``, safe for several processes on one machine.

    ``max_bytes`` bounds the total size of the entries (least recently read
    are evicted first; ``None`` = unbounded).  ``timeout_s`` is how long an
    operation waits for another process's SQLite write before the cache
    fails open.
    """

    kind = "local"

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int | None = 10 * 2**30, timeout_s: float = 10.0):
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.path = Path(path).expanduser().absolute()
        self.max_bytes = max_bytes
        self.timeout_s = float(timeout_s)
        self._entries = self.path / "entries"
        self._locks = self.path / "locks"
        self._tmp = self.path / "tmp"
        self._local = threading.local()
        with self._guard("open"):
            for d in (self._entries, self._locks, self._tmp):
                d.mkdir(parents=True, exist_ok=True)
            with self._write() as db:
                for statement in _SCHEMA:
                    db.execute(statement)

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.path)!r}, max_bytes={self.max_bytes})"

    def describe(self) -> str:
        return str(self.path)

    # -- plumbing -------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            # A connection must not cross fork(): a forked child opens its own.
            conn = sqlite3.connect(self.path / "index.sqlite3", timeout=self.timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"local cache {self.path}: {what} failed: {exc}") from exc

    def _unlink(self, files: Sequence[str]) -> None:
        for rel in files:
            try:
                os.unlink(self._entries / rel)
            except FileNotFoundError:
                pass

    def _remove(self, db: sqlite3.Connection, rows: Sequence[tuple[str, str]]) -> list[str]:
        """Delete index rows ``(key, file)`` (inside a write transaction); return the files to unlink."""
        gone = []
        for key, rel in rows:
            if db.execute("DELETE FROM entries WHERE key = ? AND file = ?", (key, rel)).rowcount:
                db.execute("DELETE FROM tags WHERE key = ?", (key,))
                gone.append(rel)
        return gone

    # -- entries --------------------------------------------------------------
    def get(self, key: CacheKey) -> bytes | None:
        k = str(key)
        with self._guard("read"):
            db = self._db()
            row = db.execute("SELECT file, expires FROM entries WHERE key = ?", (k,)).fetchone()
            if row is None:
                return None
            rel, expires = row
            now = time.time()
            if expires is not None and expires <= now:
                with self._write() as wdb:
                    gone = self._remove(wdb, [(k, rel)])
                self._unlink(gone)
                return None
            try:
                with open(self._entries / rel, "rb") as f:
                    data = f.read()
            except FileNotFoundError:  # replaced or evicted since the row was read
                return None
            db.execute("UPDATE entries SET accessed = ? WHERE key = ? AND file = ?", (now, k, rel))
            return data

    def put(
        self,
        key: CacheKey,
        segments: Sequence[bytes | memoryview],
        nbytes: int,
        *,
        ttl_s: float | None,
        tags: Sequence[str] = (),
    ) -> None:
        k = str(key)
        h = _key_hash(key)
        rel = f"{h[:2]}/{h}-{secrets.token_hex(6)}"
        final = self._entries / rel
        tmp = self._tmp / final.name
        with self._guard("write"):
            final.parent.mkdir(exist_ok=True)
            try:
                with open(tmp, "wb") as f:
                    for segment in segments:
                        f.write(segment)
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            now = time.time()
            try:
                with self._write() as db:
                    old = db.execute("SELECT file FROM entries WHERE key = ?", (k,)).fetchone()
                    gone = self._remove(db, [(k, old[0])]) if old else []
                    db.execute(
                        "INSERT INTO entries (key, namespace, function, file, size, expires, accessed) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (k, key.namespace, key.function, rel, nbytes, now + ttl_s if ttl_s else None, now),
                    )
                    db.executemany("INSERT OR IGNORE INTO tags (tag, key) VALUES (?, ?)", [(t, k) for t in tags])
            except BaseException:
                final.unlink(missing_ok=True)
                raise
            self._unlink(gone)
            self._evict()

    def _evict(self) -> None:
        if self.max_bytes is None:
            return
        db = self._db()
        (total,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
        if total <= self.max_bytes:
            return
        with self._write() as wdb:
            victims = []
            (total,) = wdb.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
            now = time.time()
            # Expired entries go first, then the least recently read.
            rows = wdb.execute(
                "SELECT key, file, size FROM entries ORDER BY (expires IS NOT NULL AND expires <= ?) DESC, accessed",
                (now,),
            )
            for key, rel, size in rows:
                if total <= self.max_bytes:
                    break
                victims.append((key, rel))
                total -= size
            gone = self._remove(wdb, victims)
        self._unlink(gone)

    def delete(self, key: CacheKey) -> None:
        with self._guard("delete"):
            with self._write() as db:
                rows = db.execute("SELECT key, file FROM entries WHERE key = ?", (str(key),)).fetchall()
                gone = self._remove(db, rows)
            self._unlink(gone)

    def invalidate(
        self, *, namespace: str | None = None, function: str | None = None, tag: str | None = None
    ) -> int:
        where, params = [], []
        for column, value in (("namespace", namespace), ("function", function)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if tag is not None:
            where.append("key IN (SELECT key FROM tags WHERE tag = ?)")
            params.append(tag)
        if not where:
            raise ValueError("invalidate() needs at least one of namespace, function, tag")
        with self._guard("invalidate"):
            with self._write() as db:
                rows = db.execute(f"SELECT key, file FROM entries WHERE {' AND '.join(where)}", params).fetchall()
                gone = self._remove(db, rows)
            self._unlink(gone)
        return len(gone)

    def entry_count(self) -> int:
        """Number of entries in the index (expired ones not yet purged included)."""
        with self._guard("count"):
            return int(self._db().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    # -- locks ----------------------------------------------------------------
    def try_lock(self, key: CacheKey, lease_s: float) -> BackendLock | None:
        path = self._locks / f"{_key_hash(key)}.lock"
        with self._guard("lock"):
            for _ in range(5):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        return None
                    raise
                held = os.fstat(fd)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
                if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
                    return _FileLock(fd, path)
                os.close(fd)  # the holder released (unlinked) it between our open and flock: retry
        return None

    # -- statistics -----------------------------------------------------------
    def add_stats(self, delta: StatsDelta, batch: str | None = None) -> list[str]:
        rows = [(ns, fn, *(d.get(f, 0) for f in STAT_FIELDS)) for (ns, fn), d in delta.items()]
        if not rows:
            return []
        repairs: list[str] = []
        with self._guard("statistics update"), self._write() as db:
            if batch is not None:
                now = time.time()
                added = db.execute("INSERT OR IGNORE INTO stat_batches (id, added) VALUES (?, ?)", (batch, now))
                if added.rowcount == 0:
                    return []  # added before: its reply was lost
                db.execute("DELETE FROM stat_batches WHERE added < ?", (now - BATCH_TTL_S,))
            for ns, fn, *_ in rows:
                repairs += self._check_row(db, ns, fn)
            db.executemany(_ADD_STATS, rows)
        for line in repairs:
            log.warning("effopt cache: %s", line)
        return repairs

    @staticmethod
    def _check_row(db: sqlite3.Connection, ns: str, fn: str) -> list[str]:
        """Reset the fields of one statistics row that are not non-negative numbers (inside a write)."""
        row = db.execute(f"SELECT {', '.join(STAT_FIELDS)} FROM stats WHERE namespace = ? AND function = ?",
                         (ns, fn)).fetchone()
        if row is None:
            return []
        found = []
        for field, value in zip(STAT_FIELDS, row, strict=True):
            if parse_stat(field, value) is None:
                db.execute(f"UPDATE stats SET {field} = 0 WHERE namespace = ? AND function = ?", (ns, fn))
                found.append(f"statistics field {field!r} of {ns}:{fn} held {value!r:.60}, not a counter: reset to 0")
        return found

    def read_stats(
        self, namespace: str | None = None, problems: list[str] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]:
        query = f"SELECT namespace, function, {', '.join(STAT_FIELDS)} FROM stats"
        params: tuple[str, ...] = ()
        if namespace is not None:
            query += " WHERE namespace = ?"
            params = (namespace,)
        out: dict[str, dict[str, dict[str, float]]] = {}
        bad: list[tuple[str, str]] = []
        with self._guard("statistics read"):
            for ns, fn, *values in self._db().execute(query + " ORDER BY namespace, function", params):
                stats = zero_stats()
                for field, value in zip(STAT_FIELDS, values, strict=True):
                    parsed = parse_stat(field, value)
                    if parsed is None:
                        if (ns, fn) not in bad:
                            bad.append((ns, fn))
                    else:
                        stats[field] = float(parsed) if field in FLOAT_STATS else int(parsed)
                out.setdefault(str(ns), {})[str(fn)] = stats
            found: list[str] = []
            if bad:
                with self._write() as db:
                    for ns, fn in bad:
                        found += self._check_row(db, ns, fn)
        for line in found:
            log.warning("effopt cache: %s", line)
        if problems is not None:
            problems.extend(found)
        return out

    def ping(self) -> None:
        with self._guard("ping"):
            self._db().execute("SELECT 1").fetchone()

    def peek(self, key: CacheKey) -> tuple[bool, bool]:
        with self._guard("peek"):
            row = self._db().execute("SELECT expires FROM entries WHERE key = ?", (str(key),)).fetchone()
            stored = row is not None and (row[0] is None or row[0] > time.time())
            path = self._locks / f"{_key_hash(key)}.lock"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return stored, False
            try:
                # A shared lock for an instant: it fails while a holder has the exclusive one.
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return stored, True
                raise
            finally:
                os.close(fd)
        return stored, False

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None
