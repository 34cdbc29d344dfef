"""Typed recommender settings: every field declares its bounds and a description, as KRR's strategies do.

A settings class is a frozen dataclass deriving from :class:`RecommenderSettings`
whose fields are made with :func:`setting`.  Constructing one validates every
field (type and bounds) and rejects an invalid value with an error naming the
field; :func:`parse_settings` turns ``{name: value}`` (values as strings, from
``--set name=value`` or an Airflow param, or as numbers) into a validated
instance; :func:`describe` lists the fields for help texts.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

__all__ = ["Bounds", "RecommenderSettings", "SettingError", "SettingInfo", "describe", "parse_assignments",
           "parse_settings", "setting"]


class SettingError(ValueError):
    """An unknown setting, or a value of the wrong type or out of its bounds (the message names the field)."""


@dataclass(frozen=True)
class Bounds:
    """``ge <= v``, ``gt < v``, ``v <= le``, ``v < lt`` (None: unbounded on that side)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violated(self, v: float) -> bool:
        return ((self.ge is not None and not v >= self.ge) or (self.gt is not None and not v > self.gt)
                or (self.le is not None and not v <= self.le) or (self.lt is not None and not v < self.lt))

    def __str__(self) -> str:
        lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else "(-inf"
        hi = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else "inf)"
        return f"{lo}, {hi}"


def setting(default: Any, description: str, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A settings field with a default, a one-line description and bounds (numbers only)."""
    return field(default=default, metadata={"description": description, "bounds": Bounds(ge, gt, le, lt)})


@dataclass(frozen=True)
class SettingInfo:
    """One field of a settings class, for help texts."""

    name: str
    type: str
    default: Any
    bounds: Bounds
    description: str


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of settings class ``cls`` (resolved once per class: recommenders are made often)."""
    return typing.get_type_hints(cls)


def _kinds(hint: Any) -> tuple[type, bool]:
    """(the value's type, whether None is allowed) of a field's type hint: ``float``, ``int``, ``bool``, ``str``
    or one of them ``| None``."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else ()
    if args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], len(rest) < len(args)
    return hint, False


def _label(hint: Any) -> str:
    kind, optional = _kinds(hint)
    return kind.__name__ + (" or none" if optional else "")


@dataclass(frozen=True)
class RecommenderSettings:
    """Base of the recommenders' settings: validates every field on construction."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        hints = _hints(type(self))
        for f in fields(self):
            v = getattr(self, f.name)
            kind, optional = _kinds(hints[f.name])
            if v is None:
                if not optional:
                    raise SettingError(f"{owner}.{f.name}: must be a {kind.__name__}, got None")
                continue
            if kind is bool:
                if not isinstance(v, bool):
                    raise SettingError(f"{owner}.{f.name}: must be true or false, got {v!r}")
                continue
            if kind in (int, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
                    raise SettingError(f"{owner}.{f.name}: must be {'an integer' if kind is int else 'a number'}, "
                                       f"got {v!r}")
                if math.isnan(v):
                    raise SettingError(f"{owner}.{f.name}: must be a number, got NaN")
                bounds: Bounds = f.metadata.get("bounds", Bounds())
                if bounds.violated(float(v)):
                    raise SettingError(f"{owner}.{f.name}: must be in {bounds}, got {v!r}")


S = TypeVar("S", bound=RecommenderSettings)


def describe(cls: type[RecommenderSettings]) -> list[SettingInfo]:
    """The fields of settings class ``cls``: name, type, default, bounds and description."""
    hints = _hints(cls)
    return [SettingInfo(f.name, _label(hints[f.name]), None if f.default is MISSING else f.default,
                        f.metadata.get("bounds", Bounds()), f.metadata.get("description", ""))
            for f in fields(cls)]


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    """``value`` (a string from a command line, or a JSON value) as the field's type; bounds are checked later."""
    kind, optional = _kinds(hint)
    if not isinstance(value, str):
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    text = value.strip()
    if optional and text.lower() in ("none", "null", ""):
        return None
    if kind is bool:
        truth = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
                 "off": False}
        if text.lower() not in truth:
            raise SettingError(f"{owner}.{name}: must be true or false, got {value!r}")
        return truth[text.lower()]
    try:
        return int(text) if kind is int else float(text) if kind is float else text
    except ValueError:
        raise SettingError(f"{owner}.{name}: must be {'an integer' if kind is int else 'a number'}, "
                           f"got {value!r}") from None


def parse_settings(cls: type[S], values: Mapping[str, Any] | None, base: S | None = None) -> S:
    """``base`` (default: the defaults of ``cls``) with ``values`` (name -> value, strings or JSON values)
    applied, validated; an unknown name or an invalid value raises :class:`SettingError` naming it."""
    owner = cls.__name__
    hints = _hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values or {}) - known)
    if unknown:
        raise SettingError(f"{owner} has no setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    start = base if base is not None else cls()
    merged = {f.name: getattr(start, f.name) for f in fields(cls)}
    merged.update({k: _coerce(owner, k, hints[k], v) for k, v in (values or {}).items()})
    return cls(**merged)


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["name=value", ...]`` (``--set``, repeatable) as a dict; a malformed item raises :class:`SettingError`."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SettingError(f"--set {item!r}: expected name=value")
        out[name.strip()] = value.strip()
    return out
