"""How node outputs travel between tasks: small values inline, large ones by reference.

:class:`ValueCodec` turns a value into something JSON-able for XCom:

- JSON values (bool, int, float, str, lists, dicts with str keys) stay as
  they are while their JSON text is at most ``max_inline_bytes`` (a bare None
  becomes ``{"__effopt_value__": "none"}``);
- numpy arrays up to ``max_inline_bytes`` go inline as ``.npy`` bytes
  (base64, ``allow_pickle=False``);
- everything else -- larger arrays and JSON, data frames, models, tuples --
  goes to a :class:`ValueStore` and XCom carries a small reference
  ``{"__effopt_value__": "ref", "kind": ..., "location": ..., "format": ...}``.
  Pickled objects are only ever read from a store, never from XCom, and
  only after their HMAC-SHA256 tag (``signing_key``, or a ``fallback_keys``
  key rotated out) verifies: bytes someone else wrote into the store are
  refused, never unpickled.

A store is anything with ``kind``, ``put(key, data) -> location`` and
``get(location) -> bytes``: Airflow object storage by default
(:class:`effopt.hooks.graph_values.ObjectStorageValueStore`); the computation cache
plugs in as another store.  Decoding finds the store by the reference's
``kind``, so values written by one store stay readable while another writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import pickle
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

TAG = "__effopt_value__"
_MAC_BYTES = 32


class ValueStore(ABC):
    """Where large values live; ``kind`` names it in references.  Stores subclass it."""

    kind: str = ""

    @abstractmethod
    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (a path-like name); return its location."""

    @abstractmethod
    def get(self, location: str) -> bytes:
        """The bytes stored at ``location``."""

    def mark_run_active(self, run_prefix: str) -> None:
        """A task of the run under ``run_prefix`` is starting: a store whose values expire by retention keeps
        the run (object storage rewrites the run's marker).  Nothing to do for stores that bound their
        entries themselves (the computation cache)."""
        return


log = logging.getLogger(__name__)
#: Fallback keys (by position) this process has already warned about.
_FALLBACKS_WARNED: set[int] = set()


def is_json_value(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` round-trips through JSON unchanged (and is not one of our tagged dicts)."""
    if depth > 100:
        return False
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return type(value) in (int, float)
    if type(value) is list:
        return all(is_json_value(v, depth + 1) for v in value)
    if type(value) is dict:
        if TAG in value:
            return False
        return all(isinstance(k, str) and is_json_value(v, depth + 1) for k, v in value.items())
    return False


def _is_ndarray(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


class ValueCodec:
    """Encode values for XCom and decode them back (see the module docstring)."""

    def __init__(
        self,
        store: ValueStore,
        *,
        max_inline_bytes: int = 65536,
        readers: Sequence[ValueStore] = (),
        signing_key: bytes | None = None,
        fallback_keys: Sequence[bytes] = (),
    ) -> None:
        self.store = store
        self.signing_key = signing_key
        #: Keys rotated out: pickles they signed still verify; nothing is signed with them.
        self.fallback_keys = tuple(fallback_keys)
        self.max_inline_bytes = max_inline_bytes
        self.readers: dict[str, ValueStore] = {s.kind: s for s in readers}
        self.readers[store.kind] = store

    def encode(self, value: Any, key: str) -> Any:
        """A JSON-able form of ``value``; ``key`` names it in the store when it goes there."""
        if value is None:
            return {TAG: "none"}  # Airflow's xcom_pull cannot tell a None value from a missing XCom
        if is_json_value(value):
            text = json.dumps(value).encode()
            if len(text) <= self.max_inline_bytes:
                return value
            return self._ref(key, "json", text)
        if _is_ndarray(value) and value.dtype.hasobject is False:
            import numpy as np

            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            data = buffer.getvalue()
            if len(data) <= self.max_inline_bytes:
                return {TAG: "npy", "b64": base64.b64encode(data).decode("ascii")}
            return self._ref(key, "npy", data)
        if self.signing_key is None:
            raise TypeError(
                f"value {key!r} of type {type(value).__name__} must be pickled to travel between tasks, "
                "which needs a signing key (configure [effopt] cache_secret)"
            )
        payload = pickle.dumps(value, protocol=5)
        return self._ref(key, "pickle", self._mac(payload) + payload)

    def _mac(self, payload: bytes, key: bytes | None = None) -> bytes:
        key = self.signing_key if key is None else key
        assert key is not None
        return hmac.new(key, payload, hashlib.sha256).digest()

    def _verified(self, tag: bytes, payload: bytes) -> int | None:
        """None when no key signed ``payload``; -1 the signing key; ``i`` the ``i``-th fallback key."""
        assert self.signing_key is not None
        if len(tag) != _MAC_BYTES:
            return None
        for index, key in enumerate((self.signing_key, *self.fallback_keys), start=-1):
            if hmac.compare_digest(tag, self._mac(payload, key)):
                return index
        return None

    def _ref(self, key: str, fmt: str, data: bytes) -> dict[str, Any]:
        location = self.store.put(f"{key}.{fmt}", data)
        return {TAG: "ref", "kind": self.store.kind, "location": location, "format": fmt, "nbytes": len(data)}

    def decode(self, encoded: Any) -> Any:
        """The value ``encoded`` stands for."""
        if not (isinstance(encoded, Mapping) and TAG in encoded):
            return encoded
        tag = encoded[TAG]
        if tag == "none":
            return None
        if tag == "npy":
            return _load_npy(base64.b64decode(encoded["b64"]))
        if tag != "ref":
            raise ValueError(f"unknown encoded value tag {tag!r}")
        kind = encoded.get("kind")
        store = self.readers.get(kind)
        if store is None:
            known = ", ".join(sorted(self.readers))
            raise ValueError(
                f"value reference of kind {kind!r} at {encoded.get('location')!r} but no such store is configured "
                f"(stores: {known})"
            )
        data = store.get(encoded["location"])
        fmt = encoded.get("format")
        if fmt == "npy":
            return _load_npy(data)
        if fmt == "json":
            return json.loads(data)
        if fmt == "pickle":
            where = encoded.get("location")
            if self.signing_key is None:
                raise ValueError(f"refusing to unpickle {where!r}: no signing key to verify it with")
            tag, payload = data[: _MAC_BYTES], data[_MAC_BYTES :]
            signed_with = self._verified(tag, payload)
            if signed_with is not None and signed_with >= 0 and signed_with not in _FALLBACKS_WARNED:
                _FALLBACKS_WARNED.add(signed_with)
                log.warning("effopt graph: read a value signed with fallback key %d of %d (a secret rotated out): "
                            "keep it in [effopt] cache_secret_fallbacks while graph runs older than the rotation "
                            "may be re-run (at most [effopt] graph_retention_days)", signed_with + 1,
                            len(self.fallback_keys))
            if signed_with is None:
                raise ValueError(
                    f"value at {where!r} failed signature verification (tampered with, truncated, or signed with "
                    "another [effopt] cache_secret); refusing to unpickle it"
                )
            return pickle.loads(payload)  # noqa: S301 - verified: written by a task holding the signing key
        raise ValueError(f"unknown value format {fmt!r} at {encoded.get('location')!r}")


def is_reference(encoded: Any) -> bool:
    return isinstance(encoded, Mapping) and encoded.get(TAG) == "ref"


def _load_npy(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)
