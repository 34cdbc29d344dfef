"""Entry format: safe serialisation, compression and HMAC signing of cached values.

An entry is::

    b"EFC1" | header length (u32 LE) | header (JSON) | zero padding to 64 | body | MAC (32 bytes)

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
:class:`RejectedEntry` and never unpickled.
"""

from __future__ import annotations

import hmac
import json
import pickle
import struct
import time
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np
import zstandard

__all__ = [
    "MAGIC",
    "EntryTooLarge",
    "OpenedEntry",
    "RejectedEntry",
    "SealedEntry",
    "open_entry",
    "seal_entry",
    "verify_entry",
]

MAGIC = b"EFC1"
_PREFIX = struct.Struct("<4sI")
_MAC_LEN = 32
_ALIGN = 64
_DOMAIN = b"effopt-cache-entry-v1\x00"
_SMALL = 64 * 1024  # segments below this are coalesced into one buffer
_THREADED_HASH = 1 << 20  # BLAKE3 uses its worker threads from this size on
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


@dataclass(frozen=True)
class OpenedEntry:
    value: Any
    compute_s: float
    created: float
    nbytes: int


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


def _mac(secret: bytes, key: str, digest: bytes) -> bytes:
    return hmac.digest(secret, _DOMAIN + key.encode() + b"\x00" + digest, "sha256")


def _byte_view(buf: Any) -> memoryview:
    return memoryview(buf).cast("B")


def _body_parts(value: Any) -> tuple[dict[str, Any], list[memoryview | bytes]]:
    """Header fields and the pieces of the uncompressed body."""
    if type(value) is np.ndarray and not value.dtype.hasobject and value.dtype.fields is None:
        flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        return {"kind": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape)}, [_byte_view(flat)]
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return {"kind": "pickle"}, [stream, *(b.raw() for b in buffers)]


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
    header, pieces = _body_parts(value)
    parts: list[list[int]] = []
    offset = 0
    for piece in pieces:
        offset = _align(offset)
        n = _nbytes(piece)
        parts.append([offset, n])
        offset += n
    raw_len = offset
    compressed: bytes | None = None
    if raw_len >= compress_min_bytes and _compressible(pieces, 1):
        cobj = zstandard.ZstdCompressor(level=compress_level).compressobj(size=raw_len)
        chunks = []
        pos = 0
        for (start, _n), piece in zip(parts, pieces, strict=True):
            if start > pos:
                chunks.append(cobj.compress(bytes(start - pos)))
            chunks.append(cobj.compress(piece))
            pos = start + _n
        chunks.append(cobj.flush())
        candidate = b"".join(chunks)
        if len(candidate) < raw_len:
            compressed = candidate
    header.update(
        v=1,
        codec="zstd" if compressed is not None else None,
        raw_len=raw_len,
        parts=parts,
        compute_s=round(compute_s, 6),
        created=round(time.time(), 3),
    )
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head_len = _PREFIX.size + len(header_bytes)
    body_len = len(compressed) if compressed is not None else raw_len
    total = _align(head_len) + body_len + _MAC_LEN
    if max_bytes is not None and total > max_bytes:
        raise EntryTooLarge(total, max_bytes)

    seg = _Segments()
    seg.add(_PREFIX.pack(MAGIC, len(header_bytes)) + header_bytes)
    seg.pad(_align(head_len) - head_len)
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


def verify_entry(blob: bytes | bytearray | memoryview, *, key: str, secret: bytes) -> memoryview:
    """The signed content of ``blob`` (everything before the MAC); raise :class:`RejectedEntry` if it fails."""
    mv = memoryview(blob).cast("B")
    if mv.nbytes < _PREFIX.size + _MAC_LEN or bytes(mv[:4]) != MAGIC:
        raise RejectedEntry("not an effopt cache entry (unsigned or foreign data)")
    content = mv[:-_MAC_LEN]
    if not hmac.compare_digest(_mac(secret, key, _digest([content])), bytes(mv[-_MAC_LEN:])):
        raise RejectedEntry("signature mismatch (tampered with, truncated, or signed with another secret)")
    return content


def open_entry(blob: bytes | bytearray | memoryview, *, key: str, secret: bytes) -> OpenedEntry:
    """Verify ``blob`` and return its value.

    Raises :class:`RejectedEntry` before reading anything else when the MAC
    does not match.  numpy arrays in the value are read-only views of
    ``blob`` (or of its decompressed body): no copy is made.
    """
    content = verify_entry(blob, key=key, secret=secret).toreadonly()
    # From here on the bytes are authentic: written by a holder of the secret for this key.
    _, header_len = _PREFIX.unpack(content[: _PREFIX.size])
    header = json.loads(bytes(content[_PREFIX.size : _PREFIX.size + header_len]))
    body: memoryview = content[_align(_PREFIX.size + header_len) :]
    if header["codec"] == "zstd":
        body = memoryview(zstandard.ZstdDecompressor().decompress(body)).toreadonly()
    views = [body[start : start + n] for start, n in header["parts"]]
    if header["kind"] == "ndarray":
        dtype = np.dtype(header["dtype"])
        shape = tuple(header["shape"])
        value: Any = np.frombuffer(views[0], dtype=dtype, count=int(np.prod(shape, dtype=np.int64))).reshape(shape)
    else:
        value = pickle.loads(views[0], buffers=views[1:])
    return OpenedEntry(
        value=value, compute_s=float(header["compute_s"]), created=float(header["created"]), nbytes=_nbytes(blob)
    )
