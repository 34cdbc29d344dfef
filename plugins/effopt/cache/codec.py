"""Entry format: safe serialisation, compression and HMAC signing of cached values.

An entry is::

    header | zero padding to a multiple of 64 | body | MAC (32 bytes)

    header = b"EFC1" | format version, kind, codec, ndim (u8 each) | compute_s, created (f64)
             | body length before compression (u64) | number of parts, dtype length (u32)
             | dtype (ASCII) | shape (ndim x u64) | parts (offset, length: 2 x u64 each)

(all little-endian; a fixed binary header keeps a hit's parsing to a few
microseconds).

* The **body** holds the value.  A numpy array (not of object dtype) is its
  raw buffer, described by dtype and shape in the header: no pickle at all.
  Anything else is a pickle (protocol 5) whose buffers (numpy arrays anywhere
  in the value) are stored out of band, each 64-byte aligned, so a hit maps
  them straight onto the entry's bytes without copying.  When the body is at
  least ``compress_min_bytes`` long and a sample of it compresses, the whole
  body is one zstandard frame instead.
* The **MAC** is ``HMAC-SHA256(secret, domain | cache key | BLAKE3(everything
  before the MAC))``.  BLAKE3 is a cryptographic hash, so signing its digest
  authenticates every byte while hashing at memory speed; the cache key is
  part of the MAC so a valid entry cannot be moved under another key.

:func:`open_entry` checks the MAC **before** it parses the header or touches
the body: bytes that fail verification (unsigned, tampered with, truncated,
signed with another secret, stored under another key) are rejected with
:class:`RejectedEntry` and never unpickled.  To rotate the secret, readers
also accept MACs made with *fallback* secrets (the ones rotated out): BLAKE3
runs once, then one HMAC of 32 bytes per candidate.  Entries are only ever
signed with the current secret.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import pickle
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np
import zstandard

__all__ = [
    "MAGIC",
    "body_offset",
    "EntryTooLarge",
    "OpenedEntry",
    "RejectedEntry",
    "SealedEntry",
    "open_entry",
    "seal_entry",
    "verify_entry",
]

MAGIC = b"EFC1"
_VERSION = 1
_FIXED = struct.Struct("<4sBBBBddQII")
_KIND_NDARRAY, _KIND_PICKLE = 0, 1
_CODEC_NONE, _CODEC_ZSTD = 0, 1
_MAC_LEN = 32
_SHA256_BLOCK = 64
_ALIGN = 64
_DOMAIN = b"effopt-cache-entry-v1\x00"
_SMALL = 64 * 1024  # segments below this are coalesced into one buffer
_THREADED_HASH = 8 << 20  # BLAKE3 uses its worker threads from this size on (below, they cost more)
_SAMPLE = 32 * 1024
_COMPRESSIBLE = 0.9  # compress when a sample shrinks below this ratio


class RejectedEntry(Exception):
    """Stored bytes that failed verification; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EntryTooLarge(ValueError):
    """A serialised value is larger than the per-entry limit."""

    def __init__(self, nbytes: int, limit: int) -> None:
        super().__init__(f"entry of {nbytes} bytes exceeds the per-entry limit of {limit} bytes")
        self.nbytes = nbytes
        self.limit = limit


@dataclass(frozen=True)
class SealedEntry:
    """A signed entry as a list of buffers (written in order, never joined here)."""

    segments: list[bytes | memoryview]
    nbytes: int
    compressed: bool

    def tobytes(self) -> bytes:
        return b"".join(self.segments)


@dataclass(slots=True)
class OpenedEntry:
    value: Any
    compute_s: float
    created: float
    nbytes: int
    #: Which secret's MAC matched: -1 the signing secret, ``i`` the ``i``-th fallback (a secret rotated out).
    signed_with: int = -1


def _nbytes(buf: bytes | bytearray | memoryview) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _digest(buffers: list[bytes | memoryview]) -> bytes:
    total = sum(_nbytes(b) for b in buffers)
    h = blake3.blake3(max_threads=blake3.blake3.AUTO if total >= _THREADED_HASH else 1)
    for b in buffers:
        h.update(b)
    return h.digest()


@functools.lru_cache(maxsize=16)
def _hmac_pads(secret: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the inner and outer HMAC pads of ``secret`` (RFC 2104), computed once per secret."""
    key = hashlib.sha256(secret).digest() if len(secret) > _SHA256_BLOCK else secret
    key = key.ljust(_SHA256_BLOCK, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


def _mac(secret: bytes, key: str, digest: bytes) -> bytes:
    """``HMAC-SHA256(secret, domain | key | 0 | digest)``, continuing from the precomputed pads."""
    inner_pad, outer_pad = _hmac_pads(secret)
    inner = inner_pad.copy()
    inner.update(_DOMAIN + key.encode() + b"\x00" + digest)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.digest()


def _byte_view(buf: Any) -> memoryview:
    return memoryview(buf).cast("B")


def _body_parts(value: Any) -> tuple[int, str, tuple[int, ...], list[memoryview | bytes]]:
    """``(kind, dtype, shape, pieces of the uncompressed body)``."""
    if type(value) is np.ndarray and not value.dtype.hasobject and value.dtype.fields is None:
        flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        return _KIND_NDARRAY, value.dtype.str, value.shape, [_byte_view(flat)]
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return _KIND_PICKLE, "", (), [stream, *(b.raw() for b in buffers)]


def _compressible(pieces: list[memoryview | bytes], level: int) -> bool:
    sample = bytearray()
    for piece in pieces:
        n = _nbytes(piece)
        for start in sorted({0, n // 2, max(n - _SAMPLE, 0)}):
            sample += piece[start : start + _SAMPLE]
        if len(sample) >= 8 * _SAMPLE:
            break
    if not sample:
        return False
    return len(zstandard.ZstdCompressor(level=level).compress(bytes(sample))) < _COMPRESSIBLE * len(sample)


class _Segments:
    """Collects buffers, coalescing small ones so a backend writes few large pieces."""

    def __init__(self) -> None:
        self.out: list[bytes | memoryview] = []
        self._small = bytearray()
        self.nbytes = 0

    def add(self, data: bytes | memoryview) -> None:
        n = _nbytes(data)
        self.nbytes += n
        if n < _SMALL:
            self._small += data
            return
        self._flush()
        self.out.append(data)

    def pad(self, n: int) -> None:
        if n:
            self.add(bytes(n))

    def _flush(self) -> None:
        if self._small:
            self.out.append(bytes(self._small))
            self._small = bytearray()

    def finish(self) -> list[bytes | memoryview]:
        self._flush()
        return self.out


def seal_entry(
    value: Any,
    *,
    key: str,
    secret: bytes,
    compute_s: float,
    compress_min_bytes: int,
    compress_level: int = 3,
    max_bytes: int | None = None,
) -> SealedEntry:
    """Serialise and sign ``value`` for ``key``; raise :class:`EntryTooLarge` above ``max_bytes``."""
    kind, dtype, shape, pieces = _body_parts(value)
    parts: list[tuple[int, int]] = []
    offset = 0
    for piece in pieces:
        offset = _align(offset)
        n = _nbytes(piece)
        parts.append((offset, n))
        offset += n
    raw_len = offset
    compressed: bytes | None = None
    if raw_len >= compress_min_bytes and _compressible(pieces, 1):
        cobj = zstandard.ZstdCompressor(level=compress_level).compressobj(size=raw_len)
        chunks = []
        pos = 0
        for (start, n), piece in zip(parts, pieces, strict=True):
            if start > pos:
                chunks.append(cobj.compress(bytes(start - pos)))
            chunks.append(cobj.compress(piece))
            pos = start + n
        chunks.append(cobj.flush())
        candidate = b"".join(chunks)
        if len(candidate) < raw_len:
            compressed = candidate
    dtype_bytes = dtype.encode("ascii")
    header = b"".join(
        (
            _FIXED.pack(
                MAGIC,
                _VERSION,
                kind,
                _CODEC_ZSTD if compressed is not None else _CODEC_NONE,
                len(shape),
                compute_s,
                time.time(),
                raw_len,
                len(parts),
                len(dtype_bytes),
            ),
            dtype_bytes,
            struct.pack(f"<{len(shape)}Q", *shape),
            struct.pack(f"<{2 * len(parts)}Q", *(x for part in parts for x in part)),
        )
    )
    body_len = len(compressed) if compressed is not None else raw_len
    total = _align(len(header)) + body_len + _MAC_LEN
    if max_bytes is not None and total > max_bytes:
        raise EntryTooLarge(total, max_bytes)

    seg = _Segments()
    seg.add(header)
    seg.pad(_align(len(header)) - len(header))
    if compressed is not None:
        seg.add(compressed)
    else:
        pos = 0
        for (start, n), piece in zip(parts, pieces, strict=True):
            seg.pad(start - pos)
            seg.add(piece)
            pos = start + n
    segments = seg.finish()
    segments.append(_mac(secret, key, _digest(segments)))
    return SealedEntry(segments=segments, nbytes=total, compressed=compressed is not None)


def body_offset(entry: bytes | memoryview) -> int:
    """Where the body of ``entry`` starts.

    Reads the header's counts without verifying anything: for inspection
    tools and tests, never for loading values (use :func:`open_entry`).
    """
    _, _, _, _, ndim, _, _, _, nparts, dtype_len = _FIXED.unpack_from(entry)
    return _align(_FIXED.size + dtype_len + 8 * (ndim + 2 * nparts))


@functools.lru_cache(maxsize=256)
def _dtype(text: bytes) -> np.dtype:
    return np.dtype(text.decode("ascii"))


def verify_entry(blob: bytes | bytearray | memoryview, *, key: str, secret: bytes,
                 fallbacks: Sequence[bytes] = ()) -> memoryview:
    """The signed content of ``blob`` (everything before the MAC); raise :class:`RejectedEntry` if it fails."""
    return _verify(blob, key, secret, fallbacks)[0]


def _verify(blob: bytes | bytearray | memoryview, key: str, secret: bytes,
            fallbacks: Sequence[bytes]) -> tuple[memoryview, int]:
    """(signed content, -1 if ``secret`` signed it or the index of the fallback that did)."""
    mv = memoryview(blob)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    if mv.nbytes < _FIXED.size + _MAC_LEN or mv[:4] != MAGIC:
        raise RejectedEntry("not an effopt cache entry (unsigned or foreign data)")
    content = mv[:-_MAC_LEN]
    threads = blake3.blake3.AUTO if content.nbytes >= _THREADED_HASH else 1
    digest = blake3.blake3(content, max_threads=threads).digest()
    tag = mv[-_MAC_LEN:]
    # The signing secret first (every entry written since the rotation), then the secrets rotated out.
    for index, candidate in enumerate((secret, *fallbacks), start=-1):
        if hmac.compare_digest(_mac(candidate, key, digest), tag):
            return content, index
    raise RejectedEntry("signature mismatch (tampered with, truncated, or signed with another secret)")


def open_entry(blob: bytes | bytearray | memoryview, *, key: str, secret: bytes,
               fallbacks: Sequence[bytes] = ()) -> OpenedEntry:
    """Verify ``blob`` and return its value.

    Raises :class:`RejectedEntry` before reading anything else when the MAC
    matches neither ``secret`` nor one of ``fallbacks`` (secrets rotated out,
    accepted for reading only).  numpy arrays in the value are read-only views of
    ``blob`` (or of its decompressed body): no copy is made.
    """
    content, signed_with = _verify(blob, key, secret, fallbacks)
    if not content.readonly:  # e.g. a bytearray: values must not write into the entry
        content = content.toreadonly()
    # From here on the bytes are authentic: written by a holder of the secret for this key.
    _, version, kind, codec, ndim, compute_s, created, raw_len, nparts, dtype_len = _FIXED.unpack_from(content)
    if version != _VERSION:
        raise RejectedEntry(f"entry format version {version} is not supported (this effopt writes {_VERSION})")
    pos = _FIXED.size + dtype_len
    numbers = struct.unpack_from(f"<{ndim + 2 * nparts}Q", content, pos)
    shape, flat_parts = numbers[:ndim], numbers[ndim:]
    body = content[_align(pos + 8 * len(numbers)) :]
    if codec == _CODEC_ZSTD:
        body = memoryview(zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_len)).toreadonly()
    views = [body[flat_parts[i] : flat_parts[i] + flat_parts[i + 1]] for i in range(0, 2 * nparts, 2)]
    if kind == _KIND_NDARRAY:
        dtype = _dtype(bytes(content[_FIXED.size : _FIXED.size + dtype_len]))
        value: Any = np.ndarray(shape, dtype=dtype, buffer=views[0])
    else:
        value = pickle.loads(views[0], buffers=views[1:])
    return OpenedEntry(value=value, compute_s=compute_s, created=created, nbytes=_nbytes(blob),
                       signed_with=signed_with)
