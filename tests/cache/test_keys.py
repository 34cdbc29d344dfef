"""Keys that tell unequal inputs apart (issue 14, item 1) and stay clear errors on what they refuse.

Unit tests for each input kind that used to collide, then a property test:
pairs made by changing one thing that distinguishes two values (a category's
order, a zone with the same printed offset, a column's name...) get different
keys, and values rebuilt independently get equal ones.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import pickle
import struct
import sys
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from effopt.cache import (
    ComputationCache,
    LocalBackend,
    UnhashableInput,
    canonical_digest,
    function_name,
    task_function_name,
)
from effopt.cache.hashing import MAX_DEPTH
from effopt.cache.report import display_name
from tests.cache.workers import SECRET


def d(value):
    return canonical_digest(value)


# -- pandas ------------------------------------------------------------------------------------


def test_categorical_categories_their_order_and_ordered_are_part_of_the_key():
    one = pd.Categorical(["a"], categories=["a"])
    three = pd.Categorical(["a"], categories=["a", "b", "c"])
    assert d(one) != d(three)
    assert d(pd.Series(one)) != d(pd.Series(three))
    ab = pd.Series(pd.Categorical(["a", "b"], categories=["a", "b"]))
    ba = pd.Series(pd.Categorical(["a", "b"], categories=["b", "a"]))
    assert d(ab) != d(ba)  # pandas calls these dtypes equal (unordered), but codes and sort order differ
    ordered = pd.Series(pd.Categorical(["a", "b"], categories=["a", "b"], ordered=True))
    assert d(ab) != d(ordered)
    assert d(pd.DataFrame({"c": one})) != d(pd.DataFrame({"c": three}))
    assert d(pd.CategoricalIndex(["a"], categories=["a"])) != d(pd.CategoricalIndex(["a"], categories=["a", "b"]))
    assert d(pd.Series(one)) == d(pd.Series(pd.Categorical(["a"], categories=["a"])))


def test_cached_function_does_not_return_the_result_of_another_categorical(tmp_path):
    cache = ComputationCache(LocalBackend(tmp_path / "c"), SECRET)

    @cache.cached
    def categories(values):
        return list(values.categories)

    assert categories(pd.Categorical(["a"], categories=["a"])) == ["a"]
    assert categories(pd.Categorical(["a"], categories=["a", "b", "c"])) == ["a", "b", "c"]


def test_pandas_dtypes_index_columns_and_zones_are_part_of_the_key():
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    assert d(df) != d(df[["b", "a"]])  # column order
    assert d(df) != d(df.rename(columns={"b": "B"}))  # column names
    assert d(df) != d(df.rename_axis("row"))  # index name
    assert d(df) != d(df.set_axis(pd.Index([0, 1], dtype="int32")))  # index dtype
    assert d(pd.Series([1, 2])) != d(pd.Series([1, 2], dtype="Int64"))  # nullable vs numpy
    assert d(pd.Series([1, None], dtype="Int64")) != d(pd.Series([1, 0], dtype="Int64"))  # NA vs 0
    utc = pd.Series(pd.date_range("2024-01-01", periods=2, tz="UTC"))
    assert d(utc) != d(utc.dt.tz_convert("Europe/Paris"))  # same instants, other zone
    assert d(utc) != d(utc.dt.tz_convert(ZoneInfo("UTC")))  # another identity for UTC
    assert d(utc) != d(utc.dt.as_unit("s"))  # unit
    assert d(pd.Series(pd.period_range("2024-01", periods=2, freq="M"))) != d(
        pd.Series(pd.period_range("2024-01-01", periods=2, freq="D")))
    assert d(pd.Series(pd.arrays.SparseArray([0, 1], fill_value=0))) != d(
        pd.Series(pd.arrays.SparseArray([0, 1], fill_value=1)))
    assert d(pd.interval_range(0, 2, closed="left")) != d(pd.interval_range(0, 2, closed="right"))
    assert d(pd.Series(["a", None], dtype="string")) != d(pd.Series(["a", None], dtype="str"))  # NA vs NaN
    assert d(pd.date_range("2024", periods=3, freq="D")) != d(pd.DatetimeIndex(["2024-01-01", "2024-01-02",
                                                                               "2024-01-03"]))  # freq
    mi = pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["x", "y"])
    assert d(mi) != d(mi.set_names(["x", "z"]))
    assert d(mi) != d(pd.MultiIndex.from_tuples([(1.0, "a"), (2.0, "b")], names=["x", "y"]))  # level dtype
    with_attrs = df.copy()
    with_attrs.attrs["units"] = "s"
    assert d(df) != d(with_attrs)


class _Opaque:
    pass


def test_unsupported_pandas_and_zone_types_raise_the_unhashable_error():
    class OddZone(dt.tzinfo):
        def utcoffset(self, when):
            return dt.timedelta(hours=1)

    with pytest.raises(UnhashableInput, match="time zone of type"):
        d(dt.datetime(2024, 1, 1, tzinfo=OddZone()))
    with pytest.raises(UnhashableInput, match="_Opaque"):
        d(pd.Series([_Opaque()], dtype=object))

    class OddDtype(pd.api.extensions.ExtensionDtype):
        name = "odd"
        type = object

    with pytest.raises(UnhashableInput, match="extension dtype"):
        d(OddDtype())


# -- datetimes -----------------------------------------------------------------------------------


def test_zones_that_print_alike_get_different_keys():
    paris = dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    fixed = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert paris.isoformat() == fixed.isoformat() and paris == fixed
    assert d(paris) != d(fixed)
    assert d(paris) != d(dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("Africa/Lagos")))  # also +01:00 in January
    assert d(fixed) != d(dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")))  # named
    assert d(dt.time(12, tzinfo=ZoneInfo("Europe/Paris"))) != d(dt.time(12, tzinfo=ZoneInfo("Africa/Lagos")))
    assert d(pd.Timestamp(paris)) != d(pd.Timestamp(fixed))
    assert d(paris) == d(dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris")))


def test_the_two_sides_of_a_dst_fold_get_different_keys():
    zone = ZoneInfo("Europe/Paris")
    first = dt.datetime(2024, 10, 27, 2, 30, tzinfo=zone)  # 02:30 happens twice that night
    second = first.replace(fold=1)
    assert first.utcoffset() != second.utcoffset()
    assert d(first) != d(second)
    # Outside a fold, fold changes nothing: same wall time, zone and offset.
    assert d(dt.datetime(2024, 7, 1, tzinfo=zone)) == d(dt.datetime(2024, 7, 1, fold=1, tzinfo=zone))


# -- nesting ---------------------------------------------------------------------------------------


def nested(depth: int, kind=list):
    value: object = 0
    for _ in range(depth):
        value = kind([value]) if kind is not dict else {"k": value}
    return value


@pytest.mark.parametrize("kind", [list, tuple, dict])
def test_extreme_nesting_is_an_unhashable_input_not_a_recursion_error(tmp_path, kind):
    assert d(nested(MAX_DEPTH, kind))  # as deep as accepted
    with pytest.raises(UnhashableInput, match=f"nested more than {MAX_DEPTH}"):
        d(nested(MAX_DEPTH + 1, kind))
    with pytest.raises(UnhashableInput, match="nested"):
        d(nested(50_000, kind))
    cache = ComputationCache(LocalBackend(tmp_path / "c"), SECRET)

    @cache.cached
    def depth_of(x):
        return 0

    with pytest.raises(UnhashableInput, match=r"cannot hash argument 'x'.*nested"):
        depth_of(nested(50_000, kind))


def test_nesting_below_the_recursion_limit_of_a_deep_caller_is_still_a_clear_error():
    def at_depth(n):
        if n:
            return at_depth(n - 1)
        return d(nested(MAX_DEPTH - 1))

    limit = sys.getrecursionlimit()
    with pytest.raises(UnhashableInput, match="nested too deeply"):
        at_depth(limit - 150)


# -- task names --------------------------------------------------------------------------------------


DAG_FILE = '''
def build_features(day, window):
    return day * window
'''


def _import_as_airflow_does(path):
    """Import a DAG file under the module name Airflow gives it (``unusual_prefix_<sha1 of path>_<stem>``)."""
    import hashlib

    name = f"unusual_prefix_{hashlib.sha1(str(path).encode()).hexdigest()}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_function_names_do_not_depend_on_where_the_dag_folder_is(tmp_path):
    copies = []
    for folder in ("mnt-a/dags", "elsewhere/deep/dags"):
        path = tmp_path / folder / "features_dag.py"
        path.parent.mkdir(parents=True)
        path.write_text(DAG_FILE)
        copies.append(_import_as_airflow_does(path).build_features)
    assert copies[0].__module__ != copies[1].__module__
    assert function_name(copies[0]) == function_name(copies[1]) == "features_dag.build_features"
    cache = ComputationCache(LocalBackend(tmp_path / "c"), SECRET)
    assert cache.key(copies[0], ("2024-01-01", 7)) == cache.key(copies[1], ("2024-01-01", 7))


def test_task_function_names_are_dag_task_and_qualname_and_display_readably():
    def build_features():
        return None

    name = task_function_name("effopt_cache_example", "build_features", build_features)
    assert name == f"effopt_cache_example/build_features/{build_features.__qualname__}"
    assert display_name(name) == "effopt_cache_example.build_features"
    assert display_name(task_function_name("etl", "group.load", build_features)) == "etl.group.load (build_features)"
    long = task_function_name("d" * 150, "t" * 150, build_features)
    assert len(long) <= 200 and long != task_function_name("d" * 150, "t" * 149, build_features)
    assert display_name("tests.cache.workers.compute") == "tests.cache.workers.compute"


# -- property test -----------------------------------------------------------------------------------

ZONES = [
    None,
    dt.timezone.utc,
    dt.timezone(dt.timedelta(hours=1)),
    dt.timezone(dt.timedelta(hours=1), "CET"),
    dt.timezone(dt.timedelta(hours=-5)),
    ZoneInfo("UTC"),
    ZoneInfo("Etc/UTC"),
    ZoneInfo("Europe/Paris"),
    ZoneInfo("Africa/Lagos"),
    ZoneInfo("America/New_York"),
]
_zones = st.sampled_from(ZONES)
_naive = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2040, 1, 1))
_datetimes = st.builds(lambda naive, zone, fold: naive.replace(tzinfo=zone, fold=fold), _naive, _zones,
                       st.integers(0, 1))
_letters = st.sampled_from("abcde")


@st.composite
def _categoricals(draw):
    categories = draw(st.lists(_letters, min_size=1, max_size=4, unique=True))
    values = draw(st.lists(st.sampled_from(categories), max_size=4))
    return pd.Categorical(values, categories=categories, ordered=draw(st.booleans()))


@st.composite
def _series(draw):
    n = draw(st.integers(0, 4))
    kind = draw(st.sampled_from(["int64", "float64", "Int64", "category", "tz", "str", "bool", "naive"]))
    if kind == "category":
        cats = draw(st.lists(_letters, min_size=1, max_size=4, unique=True))
        data = pd.Categorical(draw(st.lists(st.sampled_from(cats), min_size=n, max_size=n)), categories=cats,
                              ordered=draw(st.booleans()))
    elif kind == "tz":
        zone = draw(st.sampled_from([z for z in ZONES if z is not None]))
        data = pd.DatetimeIndex(draw(st.lists(_naive, min_size=n, max_size=n))).tz_localize(zone)
    elif kind == "naive":
        data = pd.DatetimeIndex(draw(st.lists(_naive, min_size=n, max_size=n)))
    elif kind == "str":
        data = pd.array(draw(st.lists(st.none() | _letters, min_size=n, max_size=n)), dtype="str")
    elif kind == "Int64":
        data = pd.array(draw(st.lists(st.none() | st.integers(-5, 5), min_size=n, max_size=n)), dtype="Int64")
    elif kind == "bool":
        data = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    else:
        data = np.array(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype=kind)
    index = draw(st.sampled_from(["range", "ints", "strs"]))
    if index == "range":
        idx = pd.RangeIndex(n)
    elif index == "ints":
        idx = pd.Index(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), dtype="int64")
    else:
        idx = pd.Index(draw(st.lists(_letters, min_size=n, max_size=n)), dtype=object)
    return pd.Series(data, index=idx, name=draw(st.none() | _letters))


@st.composite
def _frames(draw):
    names = draw(st.lists(_letters, min_size=1, max_size=3, unique=True))
    n = draw(st.integers(0, 3))
    columns = {}
    for name in names:
        column = draw(_series())
        columns[name] = column.iloc[:n].reset_index(drop=True).reindex(range(n))
    return pd.DataFrame(columns)


_arrays = st.builds(
    lambda values, dtype, shape: np.array(values[: int(np.prod(shape))] + [0] * int(np.prod(shape)), dtype=dtype)[
        : int(np.prod(shape))].reshape(shape),
    st.lists(st.integers(-3, 3), max_size=6),
    st.sampled_from(["int8", "int64", "float32", "float64", "datetime64[s]", "datetime64[ns]", "bool"]),
    st.sampled_from([(0,), (2,), (3,), (2, 3), (3, 2), (1, 1, 2)]),
)
_leaves = (st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, width=32) | _letters
           | _datetimes | _arrays | _categoricals() | _series() | _frames())
_values = st.recursive(
    _leaves,
    lambda children: (st.lists(children, max_size=3) | st.tuples(children, children)
                      | st.dictionaries(_letters, children, max_size=3)),
    max_leaves=6,
)


def same_zone(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if a is None:
        return True
    if isinstance(a, ZoneInfo):
        return a.key == b.key
    return a.utcoffset(None) == b.utcoffset(None) and a.tzname(None) == b.tzname(None)


def same_dtype(a, b) -> bool:
    if type(a) is not type(b) or str(a) != str(b):
        return False
    if isinstance(a, pd.CategoricalDtype):
        return a.ordered == b.ordered and list(a.categories) == list(b.categories) and same_dtype(
            a.categories.dtype, b.categories.dtype)
    if isinstance(a, pd.DatetimeTZDtype):
        return a.unit == b.unit and same_zone(a.tz, b.tz)
    return True


def same_elements(a, b) -> bool:
    if len(a) != len(b):
        return False
    return all(same(x, y) for x, y in zip(a, b, strict=True))


def same_index(a, b) -> bool:
    return (type(a) is type(b) and list(a.names) == list(b.names) and same_dtype(a.dtype, b.dtype)
            and getattr(a, "freq", None) == getattr(b, "freq", None)
            and same_elements(list(a.astype(object)), list(b.astype(object))))


def same_array(a, b) -> bool:
    if not same_dtype(a.dtype, b.dtype) or len(a) != len(b):
        return False
    if isinstance(a, pd.Categorical):
        return list(a.codes) == list(b.codes)
    return same_elements(list(a.astype(object)), list(b.astype(object)))


def same(a, b) -> bool:
    """Strict structural equality, written independently of the hasher: what a key must tell apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if a is None or isinstance(a, (bool, int, str)):
        return a == b
    if a is pd.NA or a is pd.NaT:
        return True
    if isinstance(a, (pd.Timestamp, dt.datetime)):
        return (a.replace(tzinfo=None) == b.replace(tzinfo=None) and same_zone(a.tzinfo, b.tzinfo)
                and a.utcoffset() == b.utcoffset() and getattr(a, "unit", None) == getattr(b, "unit", None))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, pd.Categorical):
        return same_array(a, b)
    if isinstance(a, pd.Series):
        return same(a.name, b.name) and same_index(a.index, b.index) and same_array(a.array, b.array)
    if isinstance(a, pd.DataFrame):
        return (same_index(a.columns, b.columns) and same_index(a.index, b.index)
                and all(same_array(a.iloc[:, i].array, b.iloc[:, i].array) for i in range(a.shape[1])))
    if isinstance(a, (list, tuple)):
        return same_elements(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    raise AssertionError(f"same() does not know {type(a)}")


def _series_mutations(value):
    yield value.rename("other" if value.name != "other" else "again")
    if len(value):
        yield value.set_axis(pd.Index([f"i{i}" for i in range(len(value))], dtype=object))
    if isinstance(value.dtype, pd.CategoricalDtype):
        yield value.cat.add_categories(["z"])
        yield value.cat.as_ordered() if not value.cat.ordered else value.cat.as_unordered()
    if isinstance(value.dtype, pd.DatetimeTZDtype):
        other = ZoneInfo("Africa/Lagos") if str(value.dt.tz) != "Africa/Lagos" else ZoneInfo("Europe/Paris")
        yield value.dt.tz_convert(other)  # the same instants in another zone
        yield value.dt.as_unit("ns" if value.dt.unit != "ns" else "s")
    if value.dtype == "int64":
        yield value.astype("float64")
        yield value.astype("Int64")


def _categorical_mutations(value):
    cats = list(value.categories)
    yield pd.Categorical(value, categories=cats + ["z"], ordered=value.ordered)
    yield value.set_ordered(not value.ordered)
    if len(cats) > 1:
        yield value.reorder_categories(cats[::-1])


def _frame_mutations(value):
    if value.shape[1] > 1:
        yield value[list(value.columns[::-1])]
    yield value.rename(columns={value.columns[0]: "renamed"})
    yield value.rename_axis("rows")


def _datetime_mutations(value):
    for zone in ZONES:
        if not same_zone(zone, value.tzinfo):
            yield value.replace(tzinfo=zone)
    yield value + dt.timedelta(microseconds=1)


def _array_mutations(value):
    if value.size:
        changed = value.copy()
        changed.flat[0] = changed.flat[0] + (1 if value.dtype != bool else ~changed.flat[0])
        yield changed
    yield value.reshape(-1) if value.ndim > 1 else value.reshape(1, -1)
    yield value.astype("int16" if value.dtype != "int16" else "int32")


def _dict_mutations(value):
    yield {**value, "zz": 0}
    if value:
        k = next(iter(value))
        yield {**value, k: [value[k]]}


_MUTATIONS = ((pd.Categorical, _categorical_mutations), (pd.Series, _series_mutations),
              (pd.DataFrame, _frame_mutations), (dt.datetime, _datetime_mutations),
              (np.ndarray, _array_mutations), (list, lambda v: iter((tuple(v), [*v, None]))),
              (tuple, lambda v: iter((list(v),))), (dict, _dict_mutations))


def _mutations(value, draw):
    """Copies of ``value`` that differ in one thing that distinguishes two values of its kind."""
    for kind, mutate in _MUTATIONS:
        if isinstance(value, kind):
            yield from mutate(value)
            return
    yield [value]


@st.composite
def _unequal_pairs(draw):
    value = draw(_values)
    candidates = list(_mutations(value, draw))
    assume(candidates)
    other = draw(st.sampled_from(candidates))
    # Mutate inside containers too: replace one element with a mutated copy of it.
    if isinstance(value, (list, tuple)) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        inner = list(_mutations(value[i], draw))
        assume(inner)
        items = list(value)
        items[i] = draw(st.sampled_from(inner))
        other = type(value)(items)
    return value, other


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_unequal_pairs())
def test_property_unequal_inputs_get_different_keys(pair):
    a, b = pair
    assume(not same(a, b))
    assert d(a) != d(b)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_property_equal_inputs_get_equal_keys(value):
    rebuilt = pickle.loads(pickle.dumps(value))  # built again, independently of the original's memory
    assert same(value, rebuilt)
    assert d(value) == d(rebuilt)
    assert d(value) == d(value)
