"""Entries that fail verification are rejected, counted and recomputed, and never unpickled."""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3

import pytest

from effopt.cache import CacheKey, ComputationCache, LocalBackend
from effopt.cache.codec import body_offset, seal_entry
from tests.cache.workers import SECRET


class SideEffect:
    """Unpickling this creates the directory ``path``: the proof that bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def stored_bytes(backend, key: CacheKey) -> bytes:
    blob = backend.get(key)
    assert blob is not None
    return bytes(blob)


def overwrite(backend, key: CacheKey, data: bytes) -> None:
    """Replace the stored bytes of ``key`` as someone with write access to the store would."""
    if isinstance(backend, LocalBackend):
        with sqlite3.connect(backend.path / "index.sqlite3") as db:
            row = db.execute("SELECT file FROM entries WHERE key = ?", (str(key),)).fetchone()
        if row is None:  # no entry yet: add one through the index
            backend.put(key, [data], len(data), ttl_s=None)
        else:
            (backend.path / "entries" / row[0]).write_bytes(data)
    else:
        backend.client.set(f"{backend.prefix}:e:{key}", data)


def flip_byte(backend, key: CacheKey, offset: int) -> None:
    """Change one byte of the stored entry in place."""
    if isinstance(backend, LocalBackend):
        with sqlite3.connect(backend.path / "index.sqlite3") as db:
            (rel,) = db.execute("SELECT file FROM entries WHERE key = ?", (str(key),)).fetchone()
        with open(backend.path / "entries" / rel, "r+b") as f:
            f.seek(offset)
            original = f.read(1)
            f.seek(offset)
            f.write(bytes([original[0] ^ 0x01]))
    else:
        name = f"{backend.prefix}:e:{key}"
        original = backend.client.getrange(name, offset, offset)
        backend.client.setrange(name, offset, bytes([original[0] ^ 0x01]))


@pytest.fixture
def counted(cache):
    runs: list[int] = []

    @cache.cached
    def value(n: int) -> dict:
        runs.append(n)
        return {"n": n, "squares": [i * i for i in range(n)]}

    return value, runs


def rejected_count(cache, fn) -> int:
    return cache.stats()[fn.__effopt_cache_spec__.name]["rejected"]


def test_payload_used_below_really_has_a_side_effect(tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(SideEffect(str(probe))))
    assert probe.is_dir()


def test_one_flipped_byte_is_rejected_and_recomputed(cache, counted):
    value, runs = counted
    key = value.key(5)
    value(5)
    size = len(stored_bytes(cache.backend, key))
    flip_byte(cache.backend, key, size // 2)

    result = value.call((5,))
    assert not result.hit and result.rejected == 1
    assert result.value == {"n": 5, "squares": [0, 1, 4, 9, 16]}
    assert runs == [5, 5]
    assert value.call((5,)).hit  # the recomputed entry replaced the tampered one
    assert rejected_count(cache, value) == 1


def test_truncated_entry_is_rejected(cache, counted):
    value, runs = counted
    key = value.key(3)
    value(3)
    overwrite(cache.backend, key, stored_bytes(cache.backend, key)[:-7])
    assert value.call((3,)).rejected == 1
    assert runs == [3, 3]


def test_entry_copied_under_another_key_is_rejected(cache, counted):
    value, runs = counted
    value(3)
    overwrite(cache.backend, value.key(4), stored_bytes(cache.backend, value.key(3)))
    result = value.call((4,))
    assert result.rejected == 1 and result.value["n"] == 4
    assert runs == [3, 4]


def test_unsigned_pickle_is_rejected_without_being_unpickled(cache, counted, tmp_path):
    value, runs = counted
    marker = tmp_path / "unsigned-was-unpickled"
    key = value.key(2)
    value(2)
    overwrite(cache.backend, key, pickle.dumps(SideEffect(str(marker))))

    result = value.call((2,))
    assert not marker.exists()
    assert result.rejected == 1 and result.value == {"n": 2, "squares": [0, 1]}
    assert runs == [2, 2]


def test_well_formed_entry_signed_with_another_secret_is_never_unpickled(cache, counted, tmp_path):
    value, runs = counted
    marker = tmp_path / "forged-was-unpickled"
    key = value.key(2)
    forged = seal_entry(
        SideEffect(str(marker)), key=str(key), secret=b"attacker-does-not-know-it", compute_s=0.0, compress_min_bytes=0
    )
    overwrite(cache.backend, key, forged.tobytes())

    result = value.call((2,))
    assert not marker.exists()
    assert result.rejected == 1 and not result.hit
    assert runs == [2]
    assert rejected_count(cache, value) == 1


def test_valid_entry_with_its_body_swapped_is_never_unpickled(cache, counted, tmp_path):
    value, runs = counted
    marker = tmp_path / "swapped-was-unpickled"
    key = value.key(6)
    value(6)
    genuine = stored_bytes(cache.backend, key)
    evil = seal_entry(SideEffect(str(marker)), key=str(key), secret=SECRET, compute_s=0.0, compress_min_bytes=1 << 30)
    evil_bytes = evil.tobytes()
    # Keep the genuine header and MAC, put the malicious pickle stream in the body.
    spliced = genuine[: body_offset(genuine)] + evil_bytes[body_offset(evil_bytes) : -32] + genuine[-32:]
    overwrite(cache.backend, key, spliced)

    assert value.call((6,)).rejected == 1
    assert not marker.exists()
    assert runs == [6, 6]


def test_the_secret_never_appears_in_logs_or_reprs(backend, caplog):
    secret = b"do-not-log-this-secret-value-123"
    cache = ComputationCache(backend, secret, namespace="tests")

    @cache.cached
    def f(x):
        return x

    with caplog.at_level(logging.DEBUG):
        f(1)
        overwrite(backend, f.key(1), b"garbage")
        f(1)
    assert "rejected the entry" in caplog.text
    for text in (caplog.text, repr(cache), repr(backend), str(vars(cache.backend))):
        assert secret.decode() not in text


def test_mac_is_hmac_sha256_over_the_key_and_the_blake3_digest():
    import hashlib
    import hmac

    import blake3

    for secret in (SECRET, b"k" * 100):  # a secret longer than SHA-256's block is hashed first, as RFC 2104 says
        entry = seal_entry({"a": 1}, key="ns:f:v1:abc", secret=secret, compute_s=0.5, compress_min_bytes=0).tobytes()
        body, mac = entry[:-32], entry[-32:]
        message = b"effopt-cache-entry-v1\x00" + b"ns:f:v1:abc" + b"\x00" + blake3.blake3(body).digest()
        assert mac == hmac.new(secret, message, hashlib.sha256).digest()


def test_rotated_secret_entries_are_read_through_a_fallback_and_new_ones_use_the_new_secret(backend, caplog):
    """``fallback_secrets`` ([effopt] cache_secret_fallbacks): a rotation does not turn every entry into a miss,
    the secret rotated out never signs, and once it is dropped its entries are rejected and recomputed."""
    runs: list[int] = []

    def square(n: int) -> int:
        runs.append(n)
        return n * n

    new_secret = "the-new-secret-after-rotation"
    # Wrapped before any call: the closure's state is part of the code version, hence of the key.
    old = ComputationCache(backend, SECRET, namespace="rot").cached(square)
    f = ComputationCache(backend, new_secret, namespace="rot", fallback_secrets=[SECRET]).cached(square)
    dropped = ComputationCache(backend, new_secret, namespace="rot").cached(square)
    assert old(3) == 9 and runs == [3]

    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        assert f.call((3,)).hit and f(3) == 9
    assert runs == [3]  # read through the fallback, not recomputed
    warnings = [r.getMessage() for r in caplog.records if "fallback secret" in r.getMessage()]
    assert len(warnings) == 1 and "fallback secret 1 of 1" in warnings[0] and SECRET.decode() not in warnings[0]

    assert f(4) == 16 and runs == [3, 4]  # written now: signed with the new secret only
    assert old.call((4,)).rejected == 1
    assert runs == [3, 4, 4]

    assert dropped.call((3,)).rejected == 1 and runs == [3, 4, 4, 3]


def test_fallback_secrets_are_checked_like_the_secret(backend):
    with pytest.raises(ValueError, match="fallback secret 2 must be at least 16 bytes long, got 5 bytes"):
        ComputationCache(backend, SECRET, fallback_secrets=["an-old-secret-of-16+", "short"])
    with pytest.raises(TypeError, match="a sequence of secrets, not one secret"):
        ComputationCache(backend, SECRET, fallback_secrets="an-old-secret-of-16+")


def test_configured_fallbacks_reach_the_cache(backend):
    """``[effopt] cache_secret_fallbacks`` goes through Settings into the cache a task gets."""
    from effopt.config import Settings

    @ComputationCache(backend, SECRET, namespace="rot2").cached
    def double(n: int) -> int:
        return 2 * n

    assert double(21) == 42
    settings = Settings.from_mapping({"cache_secret": "the-new-secret-after-rotation",
                                      "cache_secret_fallbacks": SECRET.decode()}, "/h")
    configured = ComputationCache.from_settings(settings, backend, namespace="rot2")
    assert configured.cached(double.__wrapped__).call((21,)).hit
