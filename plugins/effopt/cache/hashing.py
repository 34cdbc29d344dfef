"""Canonical, process-independent hashing of function inputs and function code.

:func:`canonical_digest` turns a Python value into a 128-bit xxh3 digest that
is the same in every process and on every machine, whatever ``PYTHONHASHSEED``
is.  Every value is encoded with a type tag and explicit lengths, so the
encoding is unambiguous (``[1, 2]`` and ``(1, 2)``, ``1`` and ``1.0``,
``b"a"`` and ``"a"`` all differ), and every container whose iteration order is
not part of its value is hashed independently of that order:

* ``dict`` (and its subclasses other than ``OrderedDict``): the digests of the
  ``(key, value)`` pairs are sorted, so insertion order does not matter;
* ``set`` / ``frozenset``: the digests of the elements are sorted;
* numpy arrays: dtype + shape + raw buffer (in C order), hashed by xxh3 at
  memory speed; object arrays element by element;
* dataclasses, attrs classes and pydantic models: class name + fields;
* pandas ``DataFrame`` / ``Series`` / ``Index`` / extension arrays (when
  pandas is imported): column order and names, the index (its type, names,
  levels and frequency), each column's full dtype (a categorical's categories
  in their order and its ``ordered`` flag, a zone's identity and unit,
  periods' frequency, interval closure, sparse fill values, string storage)
  and values (numeric columns through their raw buffers, categoricals by
  their codes), and ``attrs``; a third-party extension dtype is refused;
* datetimes and times: wall time, the zone's identity (``ZoneInfo`` key,
  fixed offset and name, pytz zone) and the UTC offset in force, so
  ``ZoneInfo("Europe/Paris")`` and ``timezone(timedelta(hours=1))`` differ
  although they print alike; zones without a stable identity are refused;
* module-level functions and classes: by qualified name (functions also by
  :func:`code_version`);
* any class can take part by defining ``__effopt_hash__(self)`` returning a
  value this module can hash.

Anything else, and containers nested more than :data:`MAX_DEPTH` deep,
raise :class:`UnhashableInput` (a ``TypeError``) naming where in the value
the offending object sits.  There is deliberately no fallback to
``repr``, ``pickle`` or ``hash()``: those are not stable across processes and
would silently produce cache misses or, worse, wrong hits.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import fractions
import functools
import inspect
import pathlib
import re
import struct
import sys
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import xxhash

__all__ = ["MAX_DEPTH", "UnhashableInput", "canonical_digest", "code_version", "function_name", "task_function_name"]

_PACK_F64 = struct.Struct("<d").pack
_PACK_U64 = struct.Struct("<Q").pack


class UnhashableInput(TypeError):
    """A value has no deterministic canonical hash; ``path`` says where it sits."""

    def __init__(self, message: str, path: str, type_name: str) -> None:
        super().__init__(message)
        self.path = path
        self.type_name = type_name


def _type_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


#: The module-name prefix Airflow gives the DAG files it imports: ``unusual_prefix_<sha1 of the file's path>_``.
AIRFLOW_MODULE_PREFIX = re.compile(r"(^|\.)unusual_prefix_[0-9a-f]{40}_")
_MAX_NAME = 200


def function_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, the name its cache entries and statistics are filed under.

    Airflow imports a DAG file as ``unusual_prefix_<sha1 of its path>_<file stem>``; that prefix is
    dropped, so the name does not depend on where the DAG folder sits on disk.
    """
    module = AIRFLOW_MODULE_PREFIX.sub(r"\1", getattr(func, "__module__", None) or "<unknown>")
    return f"{module}.{func.__qualname__}"


def task_function_name(dag_id: str, task_id: str, func: Callable[..., Any]) -> str:
    """``<dag_id>/<task_id>/<qualname>``: the name a cached Airflow task's entries and statistics are filed under.

    Neither the DAG file's location nor its module name is part of it, so workers that mount the DAG
    folder at different paths share entries, and moving the folder keeps them.  ``/`` cannot occur in
    DAG or task ids, so two different tasks never share a name.  A name longer than 200 characters
    keeps its first 150 and ends with a hash of the whole.
    """
    name = f"{dag_id}/{task_id}/{func.__qualname__}"
    name = re.sub(r"[\s:*?\[\]\\]", "_", name)  # only characters a key may hold (ids and qualnames rarely have any)
    if len(name) > _MAX_NAME:
        name = f"{name[:150]}~{xxhash.xxh3_64_hexdigest(name.encode())}"
    return name


_DIRECT = 64 * 1024  # byte strings from this size on go straight into the hash state
#: Containers nested deeper than this are refused (UnhashableInput) before Python's recursion limit is reached.
MAX_DEPTH = 100


class _Encoder:
    """Builds the canonical encoding of values and hashes it with xxh3-128.

    Small pieces are gathered in a buffer and hashed in one call at the end
    (cheap for the typical few small arguments); large buffers such as
    array data are streamed into the hash state without being copied.
    """

    __slots__ = ("_active", "_buf", "_h")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._h: Any = None
        self._active: set[int] = set()  # ids of containers being encoded (cycle detection)

    def digest(self) -> bytes:
        if self._h is None:
            return xxhash.xxh3_128_digest(self._buf)
        self._h.update(self._buf)
        return self._h.digest()

    # -- primitives ---------------------------------------------------------
    def _tag(self, tag: bytes) -> None:
        self._buf += tag

    def _blob(self, tag: bytes, data: bytes | memoryview) -> None:
        n = len(data) if isinstance(data, bytes) else data.nbytes
        self._buf += tag
        self._buf += _PACK_U64(n)
        if n < _DIRECT:
            self._buf += data
            return
        if self._h is None:
            self._h = xxhash.xxh3_128()
        self._h.update(self._buf)
        self._buf.clear()
        self._h.update(data)

    def _str(self, tag: bytes, text: str) -> None:
        self._blob(tag, text.encode("utf-8", "surrogatepass"))

    def _count(self, tag: bytes, n: int) -> None:
        self._buf += tag
        self._buf += _PACK_U64(n)

    def _sub_digest(self, value: Any, path: str) -> bytes:
        sub = _Encoder()
        sub._active = self._active
        sub.feed(value, path)
        return sub.digest()

    def _unordered(self, tag: bytes, digests: list[bytes]) -> None:
        self._count(tag, len(digests))
        for d in sorted(digests):
            self._buf += d

    # -- dispatch -----------------------------------------------------------
    def feed(self, value: Any, path: str) -> None:
        t = type(value)
        # Exact builtin scalars first: the hot path for typical arguments.
        if value is None:
            self._tag(b"N")
        elif t is bool:
            self._tag(b"T" if value else b"F")
        elif t is int:
            self._int(b"i", value)
        elif t is float:
            self._buf += b"f" + _PACK_F64(value)
        elif t is str:
            self._str(b"s", value)
        elif t is bytes:
            self._blob(b"b", value)
        elif isinstance(value, np.ndarray):
            self._ndarray(value, path)
        elif isinstance(value, np.generic):
            self._numpy_scalar(value, path)
        else:
            self._feed_structured(value, path, t)

    def _feed_structured(self, value: Any, path: str, t: type) -> None:
        """Containers and objects with fields, in the order their checks must run."""
        if hasattr(t, "__effopt_hash__"):
            self._str(b"H", _type_name(t))
            self._enter(value, path)  # an __effopt_hash__ that returns another such object nests too
            try:
                self.feed(value.__effopt_hash__(), f"{path}.__effopt_hash__()")
            finally:
                self._active.discard(id(value))
        elif isinstance(value, enum.Enum):
            self._str(b"E", _type_name(t))
            self._str(b"e", value.name)
        elif t in (list, tuple):
            self._sequence(b"L" if t is list else b"U", value, path)
        elif t is dict:
            self._mapping(b"D", value, path)
        elif t in (set, frozenset):
            self._set(b"S" if t is set else b"Z", value, path)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            self._fields(b"C", value, [f.name for f in dataclasses.fields(value)], path)
        elif hasattr(t, "__attrs_attrs__") and not isinstance(value, type):
            self._fields(b"A", value, [a.name for a in t.__attrs_attrs__], path)
        elif _is_pydantic_model(value):
            self._pydantic(value, path)
        elif "pandas" in sys.modules and self._pandas(value, path):
            pass
        else:
            self._feed_value_types(value, path, t)

    def _feed_value_types(self, value: Any, path: str, t: type) -> None:
        """Times, numbers, byte buffers and other value types of the standard library."""
        if isinstance(value, (_dt.datetime, _dt.time)):
            # Wall time, then the zone's identity and the UTC offset in force: a ZoneInfo zone and a fixed
            # offset that print alike stay apart, and so do the two sides of a DST fold.
            self._str(b"t", _type_name(t))
            self._str(b"t", value.replace(tzinfo=None).isoformat())
            self._tz(value.tzinfo, path)
            self._offset(value.utcoffset())
        elif isinstance(value, _dt.date):
            self._str(b"t", _type_name(t))
            self._str(b"t", value.isoformat())
        elif isinstance(value, _dt.timedelta):
            self._str(b"d", _type_name(t))
            for part in (value.days, value.seconds, value.microseconds):
                self._int(b"i", part)
        elif t is complex:
            self._buf += b"c" + _PACK_F64(value.real) + _PACK_F64(value.imag)
        elif t is bytearray:
            self._blob(b"y", bytes(value))
        elif t is memoryview:
            self._str(b"m", f"{value.format}:{value.shape}")
            self._blob(b"m", value.tobytes())
        elif t is decimal.Decimal:
            self._str(b"x", str(value))
        elif t is fractions.Fraction:
            self._int(b"q", value.numerator)
            self._int(b"q", value.denominator)
        elif t is uuid.UUID:
            self._blob(b"u", value.bytes)
        elif isinstance(value, pathlib.PurePath):
            self._str(b"p", _type_name(t))
            self._str(b"p", str(value))
        else:
            self._feed_rest(value, path, t)

    def _feed_rest(self, value: Any, path: str, t: type) -> None:
        """Ranges, slices, ordered and named containers, subclasses of builtins, callables; else unhashable."""
        if t is range:
            for part in (value.start, value.stop, value.step):
                self._int(b"r", part)
        elif t is slice:
            self._tag(b"/")
            for i, part in enumerate((value.start, value.stop, value.step)):
                self.feed(part, f"{path}.{('start', 'stop', 'step')[i]}")
        elif value is Ellipsis:
            self._tag(b".")
        elif isinstance(value, OrderedDict):
            # Order is part of an OrderedDict's value (== compares it).
            self._str(b"O", _type_name(t))
            self._sequence(b"O", list(value.items()), path)
        elif isinstance(value, tuple) and hasattr(t, "_fields"):  # namedtuple
            self._fields(b"n", value, list(t._fields), path)
        elif isinstance(value, (int, float, str, bytes, list, tuple, dict, set, frozenset)):
            self._builtin_subclass(value, path)
        elif isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
            self._callable(value, path)
        else:
            raise self._unhashable(value, path)

    # -- handlers -----------------------------------------------------------
    def _int(self, tag: bytes, value: int) -> None:
        self._blob(tag, value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True))

    def _enter(self, value: Any, path: str) -> None:
        if id(value) in self._active:
            raise UnhashableInput(f"{path} contains itself (a reference cycle)", path, _type_name(type(value)))
        if len(self._active) >= MAX_DEPTH:
            raise UnhashableInput(
                f"{path[:120]}... is nested more than {MAX_DEPTH} containers deep, which effopt does not hash "
                "(flatten it, or give its type a __effopt_hash__() method)",
                path[:200],
                _type_name(type(value)),
            )
        self._active.add(id(value))

    def _offset(self, offset: _dt.timedelta | None) -> None:
        if offset is None:
            self._tag(b"o")
            return
        self._buf += b"O"
        for part in (offset.days, offset.seconds, offset.microseconds):
            self._int(b"i", part)

    def _tz(self, tz: Any, path: str) -> None:
        """The identity of a time zone: its kind and name (offsets are encoded by the caller)."""
        if tz is None:
            self._tag(b"z")
            return
        kind = type(tz)
        if kind is _dt.timezone:
            # A fixed offset: its offset and its name (timezone(timedelta(hours=1), "CET") is another zone).
            self._str(b"Z", "datetime.timezone")
            self._offset(tz.utcoffset(None))
            self._str(b"Z", tz.tzname(None))
            return
        zoneinfo = sys.modules.get("zoneinfo")
        if zoneinfo is not None and isinstance(tz, zoneinfo.ZoneInfo):
            if tz.key is None:
                raise UnhashableInput(
                    f"{path} has a zoneinfo.ZoneInfo zone read from a file (no key), which has no stable "
                    "identity; use ZoneInfo('Area/City')",
                    path,
                    _type_name(kind),
                )
            self._str(b"Z", "zoneinfo.ZoneInfo")
            self._str(b"Z", tz.key)
            return
        module = kind.__module__.split(".")[0]
        if module == "pytz" and isinstance(getattr(tz, "zone", None), str):
            self._str(b"Z", "pytz")  # every localized pytz instance of one zone is that zone
            self._str(b"Z", tz.zone)
            return
        if module == "dateutil" and kind.__name__ in ("tzutc", "tzoffset"):
            self._str(b"Z", _type_name(kind))
            self._offset(tz.utcoffset(None))
            self._str(b"Z", str(tz.tzname(None)))
            return
        raise UnhashableInput(
            f"{path} has a time zone of type {_type_name(kind)}, which effopt cannot identify deterministically "
            "(use zoneinfo.ZoneInfo, datetime.timezone or a pytz zone)",
            path,
            _type_name(kind),
        )

    def _sequence(self, tag: bytes, value: Any, path: str) -> None:
        self._enter(value, path)
        try:
            self._count(tag, len(value))
            for i, item in enumerate(value):
                self.feed(item, f"{path}[{i}]")
        finally:
            self._active.discard(id(value))

    def _mapping(self, tag: bytes, value: Any, path: str) -> None:
        self._enter(value, path)
        try:
            digests = []
            for k, v in value.items():
                sub = _Encoder()
                sub._active = self._active
                sub.feed(k, f"{path}<key {k!r:.40}>")
                sub.feed(v, f"{path}[{k!r:.40}]")
                digests.append(sub.digest())
            self._unordered(tag, digests)
        finally:
            self._active.discard(id(value))

    def _set(self, tag: bytes, value: Any, path: str) -> None:
        self._enter(value, path)
        try:
            self._unordered(tag, [self._sub_digest(item, f"{path}<element>") for item in value])
        finally:
            self._active.discard(id(value))

    def _fields(self, tag: bytes, value: Any, names: list[str], path: str) -> None:
        self._enter(value, path)
        try:
            self._str(tag, _type_name(type(value)))
            self._count(tag, len(names))
            for name in names:
                self._str(b"k", name)
                self.feed(getattr(value, name), f"{path}.{name}")
        finally:
            self._active.discard(id(value))

    def _pydantic(self, value: Any, path: str) -> None:
        names = list(type(value).model_fields)
        self._fields(b"P", value, names, path)
        extra = getattr(value, "__pydantic_extra__", None)
        if extra:
            self._mapping(b"X", extra, f"{path}.__pydantic_extra__")

    def _builtin_subclass(self, value: Any, path: str) -> None:
        t = type(value)
        base = next(b for b in (bool, int, float, str, bytes, list, tuple, dict, set, frozenset)
                    if isinstance(value, b))
        self._str(b"V", _type_name(t))
        self.feed(base(value), path)
        state = getattr(value, "__dict__", None)
        if state:
            self._mapping(b"V", state, f"{path}.__dict__")

    def _callable(self, value: Any, path: str) -> None:
        qualname = getattr(value, "__qualname__", "")
        if "<locals>" in qualname or "<lambda>" in qualname:
            raise UnhashableInput(
                f"{path} is the local function or lambda {qualname!r}, which has no stable identity; "
                "pass a module-level function instead",
                path,
                _type_name(type(value)),
            )
        self._str(b"Q", f"{value.__module__}.{qualname}")
        if isinstance(value, types.FunctionType):
            self._str(b"Q", code_version(value))

    def _ndarray(self, value: np.ndarray, path: str) -> None:
        if type(value) is not np.ndarray:
            if isinstance(value, np.ma.MaskedArray):
                self._str(b"M", "numpy.ma.MaskedArray")
                self._ndarray(np.ma.getdata(value), f"{path}.data")
                self._ndarray(np.ma.getmaskarray(value), f"{path}.mask")
                self.feed(value.fill_value, f"{path}.fill_value")
                return
            self._str(b"V", _type_name(type(value)))
            value = np.asarray(value)
        dtype = value.dtype
        self._str(b"a", str(dtype.descr) if dtype.fields else dtype.str)
        self._count(b"a", value.ndim)
        for n in value.shape:
            self._buf += _PACK_U64(n)
        if dtype.fields:
            # Per field: structured arrays may contain uninitialised padding bytes.
            for name in dtype.names or ():
                self._ndarray(value[name], f"{path}[{name!r}]")
        elif dtype.hasobject:
            self._sequence(b"o", value.ravel().tolist(), path)
        else:
            flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
            self._blob(b"a", memoryview(flat))

    def _numpy_scalar(self, value: np.generic, path: str) -> None:
        if value.dtype.hasobject:
            self.feed(value.item(), path)
            return
        self._str(b"g", value.dtype.str)
        self._blob(b"g", value.tobytes())

    def _pandas(self, value: Any, path: str) -> bool:
        """Hash a pandas object; ``False`` when ``value`` is not one."""
        pd = sys.modules["pandas"]
        if isinstance(value, pd.DataFrame):
            self._str(b"W", "pandas.DataFrame")
            self._pandas_index(value.columns, f"{path}.columns")
            self._pandas_index(value.index, f"{path}.index")
            for i in range(value.shape[1]):
                self._pandas_array(value.iloc[:, i].array, f"{path}.iloc[:, {i}]")
            self._attrs(value, path)
        elif isinstance(value, pd.Series):
            self._str(b"W", "pandas.Series")
            self.feed(value.name, f"{path}.name")
            self._pandas_index(value.index, f"{path}.index")
            self._pandas_array(value.array, f"{path}.values")
            self._attrs(value, path)
        elif isinstance(value, pd.Index):
            self._pandas_index(value, path)
        elif isinstance(value, pd.api.extensions.ExtensionArray):
            self._str(b"W", _type_name(type(value)))
            self._pandas_array(value, path)
        elif isinstance(value, pd.api.extensions.ExtensionDtype):
            self._pandas_dtype(value, path)
        elif value is pd.NaT:
            self._tag(b"!")
        elif value is pd.NA:
            self._tag(b"?")
        elif isinstance(value, pd.Timestamp):
            self._str(b"W", "pandas.Timestamp")
            self._str(b"w", value.unit)
            self._str(b"w", value.tz_localize(None).isoformat())
            self._tz(value.tzinfo, path)
            self._offset(value.utcoffset())
        elif isinstance(value, pd.Timedelta):
            self._str(b"W", "pandas.Timedelta")
            self._str(b"w", value.unit)
            self._int(b"w", value.value)
        elif isinstance(value, pd.Period):
            self._str(b"W", "pandas.Period")
            self._str(b"w", value.freqstr)
            self._int(b"w", value.ordinal)
        elif isinstance(value, pd.Interval):
            self._str(b"W", "pandas.Interval")
            self.feed((value.left, value.right, value.closed), path)
        else:
            return False
        return True

    def _attrs(self, value: Any, path: str) -> None:
        attrs = value.attrs
        if attrs:
            self._mapping(b"X", attrs, f"{path}.attrs")
        else:
            self._tag(b"x")

    def _pandas_dtype(self, dtype: Any, path: str) -> None:
        """Everything that tells two dtypes apart (``str(dtype)`` does not: ``category`` hides the categories)."""
        if isinstance(dtype, np.dtype):
            self._str(b"a", str(dtype.descr) if dtype.fields else dtype.str)
            return
        pd = sys.modules["pandas"]
        kind = type(dtype)
        self._str(b"X", _type_name(kind))
        if isinstance(dtype, pd.CategoricalDtype):
            self.feed(dtype.ordered, f"{path}.ordered")
            if dtype.categories is None:
                self._tag(b"N")
            else:  # in their order: it is the order of the codes, and of comparisons when ordered
                self._pandas_index(dtype.categories, f"{path}.categories")
        elif isinstance(dtype, pd.DatetimeTZDtype):
            self._str(b"X", dtype.unit)
            self._tz(dtype.tz, f"{path}.tz")
        elif isinstance(dtype, pd.PeriodDtype):
            self._str(b"X", dtype.freq.freqstr)
        elif isinstance(dtype, pd.IntervalDtype):
            self._str(b"X", str(dtype.closed))
            if dtype.subtype is None:
                self._tag(b"N")
            else:
                self._pandas_dtype(dtype.subtype, f"{path}.subtype")
        elif isinstance(dtype, pd.SparseDtype):
            self._pandas_dtype(dtype.subtype, f"{path}.subtype")
            self.feed(dtype.fill_value, f"{path}.fill_value")
        elif isinstance(dtype, pd.StringDtype):
            self._str(b"X", dtype.storage)
            self.feed(dtype.na_value, f"{path}.na_value")
        elif kind in _masked_dtypes(pd):
            self._str(b"X", dtype.name)
        elif kind is getattr(pd, "ArrowDtype", None):
            self._str(b"X", str(dtype.pyarrow_dtype))
        elif kind.__name__ == "NumpyEADtype" and kind.__module__.startswith("pandas."):
            self._pandas_dtype(dtype.numpy_dtype, path)
        else:
            raise UnhashableInput(
                f"{path} has the pandas extension dtype {_type_name(kind)} ({dtype}), which effopt cannot hash "
                "deterministically (convert the column to a numpy or built-in pandas dtype)",
                path,
                _type_name(kind),
            )

    def _pandas_array(self, arr: Any, path: str) -> None:
        """The dtype and values of a pandas array (a column, a Series' values, an Index's values)."""
        pd = sys.modules["pandas"]
        dtype = arr.dtype
        self._pandas_dtype(dtype, f"{path}.dtype")
        if isinstance(dtype, np.dtype):
            self._ndarray(np.asarray(arr), path)
        elif isinstance(arr, pd.Categorical):
            self._ndarray(arr.codes, f"{path}.codes")
        elif hasattr(arr, "asi8"):  # datetimes with a zone, periods: int64 ordinals (NaT included)
            self._ndarray(arr.asi8, path)
        elif isinstance(dtype, pd.IntervalDtype):
            self._pandas_index(arr.left, f"{path}.left")
            self._pandas_index(arr.right, f"{path}.right")
            self._ndarray(np.asarray(arr.isna()), f"{path}.isna")
        elif isinstance(dtype, pd.SparseDtype):
            self._ndarray(np.asarray(arr.to_dense()), path)
        elif type(dtype) in _masked_dtypes(pd):
            mask = np.asarray(arr.isna(), dtype=bool)
            numpy_dtype = dtype.numpy_dtype
            self._ndarray(arr.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0)), path)
            self._ndarray(mask, f"{path}.isna")
        else:  # strings, Arrow types: element by element
            self._ndarray(arr.to_numpy(dtype=object), path)

    def _pandas_index(self, index: Any, path: str) -> None:
        pd = sys.modules["pandas"]
        self._str(b"I", _type_name(type(index)))
        self.feed(list(index.names), f"{path}.names")
        if isinstance(index, pd.MultiIndex):
            self._count(b"I", index.nlevels)
            for level in range(index.nlevels):
                self._pandas_index(index.get_level_values(level), f"{path}.levels[{level}]")
            return
        if isinstance(index, pd.RangeIndex):
            for part in (index.start, index.stop, index.step):
                self._int(b"r", part)
            return
        freq = getattr(index, "freq", None)  # DatetimeIndex, TimedeltaIndex, PeriodIndex
        self.feed(None if freq is None else freq.freqstr, f"{path}.freq")
        self._pandas_array(index.array, path)

    @staticmethod
    def _unhashable(value: Any, path: str) -> UnhashableInput:
        name = _type_name(type(value))
        return UnhashableInput(
            f"{path} is a {name}, which effopt cannot hash deterministically "
            f"(give {type(value).__qualname__} a __effopt_hash__() method returning plain data, "
            "convert it to plain data, or exclude the argument from the key)",
            path,
            name,
        )


@functools.cache
def _masked_dtypes(pd: Any) -> tuple[type, ...]:
    """pandas' nullable numeric and boolean dtypes (their name says everything about them)."""
    names = ("Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype", "UInt32Dtype",
             "UInt64Dtype", "Float32Dtype", "Float64Dtype", "BooleanDtype")
    return tuple(getattr(pd, n) for n in names if hasattr(pd, n))


def _is_pydantic_model(value: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def canonical_digest(value: Any, path: str = "value") -> bytes:
    """The 16-byte canonical xxh3-128 digest of ``value``.

    ``path`` names the value in error messages (``UnhashableInput``).
    """
    enc = _Encoder()
    try:
        enc.feed(value, path)
    except RecursionError:
        raise too_deep(path, value) from None
    return enc.digest()


def too_deep(path: str, value: Any) -> UnhashableInput:
    """The error for a value whose nesting exhausted the interpreter's stack before MAX_DEPTH was reached."""
    return UnhashableInput(
        f"{path} is nested too deeply to hash (the interpreter's recursion limit was reached); flatten it, "
        "or give its type a __effopt_hash__() method",
        path,
        _type_name(type(value)),
    )


def _code_parts(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(_code_parts(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return (
        code.co_code,
        getattr(code, "co_exceptiontable", b""),
        consts,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
    )


def code_version(func: Callable[..., Any], skip_defaults: tuple[str, ...] = (), _seen: set[int] | None = None) -> str:
    """A 16-hex-digit hash of what ``func`` itself executes.

    It covers the function's bytecode and constants (nested functions,
    lambdas and comprehensions included), the names it uses, its signature,
    its default values (except those of parameters in ``skip_defaults``) and
    the values its closure captured: captured functions by their own code
    version, plain data by :func:`canonical_digest`, other objects by their
    type only.

    It does **not** see, so changing them does not change the version:

    * helper functions and classes the body calls through globals or imports
      (change ``version=`` when a helper's behaviour changes);
    * global variables and module constants the body reads;
    * the state of objects captured in the closure that are not plain data
      (clients, loggers, models: only their type is hashed);
    * installed library versions, environment variables, files read.

    Comments, formatting and line numbers do not affect it.  Bytecode differs
    between Python minor versions, so workers on different Python versions
    do not share entries unless ``version=`` is given.
    """
    if not isinstance(func, types.FunctionType):
        raise TypeError(f"code_version() needs a Python function, got {type(func).__qualname__}")
    seen = set() if _seen is None else _seen
    if id(func) in seen:
        return "recursive"
    seen.add(id(func))
    # Sections use tags no canonical value starts with, so they cannot run into each other.
    enc = _Encoder()
    enc.feed(_code_parts(func.__code__), "code")
    for name, param in inspect.signature(func).parameters.items():
        if param.default is inspect.Parameter.empty or name in skip_defaults:
            continue
        enc._str(b"\x01", name)
        try:
            enc.feed(param.default, f"default of {name}")
        except UnhashableInput as exc:
            raise TypeError(
                f"the default value of parameter {name!r} of {function_name(func)} cannot be hashed "
                f"deterministically ({exc}); pass version= to cached() or list {name!r} in ignore="
            ) from exc
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=True):
        enc._str(b"\x02", name)
        try:
            content = cell.cell_contents
        except ValueError:  # empty cell: assigned after the inner function was defined
            enc._tag(b"\x03")
            continue
        if isinstance(content, types.FunctionType):
            enc._str(b"\x04", code_version(content, (), seen))
            continue
        try:
            digest = canonical_digest(content)
        except UnhashableInput:
            enc._str(b"\x05", _type_name(type(content)))
        else:
            enc._blob(b"\x06", digest)
    return enc.digest().hex()[:16]
