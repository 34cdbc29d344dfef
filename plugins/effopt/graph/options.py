"""How a graph is rendered as an Airflow DAG: the spec's ``airflow`` section, declared once.

Each option has its default, what it accepts and what it does; the spec reader
validates with them, and the compiler (:mod:`effopt.compiler`) takes one
:class:`AirflowRenderOptions` made from the spec, overridden by its caller.
Plain Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

GROUP_BY = ("stage", "group", "none")


def _whole(lo: int, hi: int | None = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


def _option(default: Any, accepted: str, check: Callable[[Any], bool], help: str) -> Any:
    return field(default=default, metadata={"accepted": accepted, "check": check, "help": help})


@dataclass(frozen=True)
class AirflowRenderOptions:
    """Options of :func:`effopt.compiler.to_airflow`, validated on construction (ValueError names the option)."""

    group_by: str = _option("stage", "one of " + ", ".join(GROUP_BY), lambda v: v in GROUP_BY,
                            "task groups: one per plan stage, one per node 'group', or none")
    stage_barriers: bool = _option(False, "true or false", lambda v: isinstance(v, bool),
                                   "an empty task between stages, so a stage starts when the previous one is done")
    serial_pool: str = _option("effopt_serial", "a pool name", lambda v: isinstance(v, str) and 0 < len(v) <= 256,
                               "the one-slot pool of parallel: false nodes")
    gpu_pool: str = _option("effopt_gpu", "a pool name", lambda v: isinstance(v, str) and 0 < len(v) <= 256,
                            "the pool of GPU nodes, pool_slots = their GPUs")
    xcom_max_bytes: int = _option(65536, "a whole number >= 0", _whole(0),
                                  "values up to this size travel in XCom; larger ones through the value store")
    max_task_id_length: int = _option(100, "a whole number from 16 to 250", _whole(16, 250),
                                      "task ids longer than this are shortened (with a hash)")
    max_active_tasks: int = _option(16, "a whole number >= 1", _whole(1),
                                    "the DAG's max_active_tasks")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.metadata["check"](value):
                raise ValueError(f"airflow option {f.name} must be {f.metadata['accepted']}, not {value!r}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def problems(cls, raw: Mapping[str, Any]) -> dict[str, str]:
        """``{key: what it accepts}`` for every known key of ``raw`` whose value it does not accept."""
        out = {}
        for f in fields(cls):
            if f.name in raw and not f.metadata["check"](raw[f.name]):
                out[f.name] = f.metadata["accepted"]
        return out

    @classmethod
    def from_settings(cls, airflow: Mapping[str, Any] | None, **overrides: Any) -> AirflowRenderOptions:
        """The options of a spec's validated ``airflow`` section, with ``overrides`` (None leaves one as is)."""
        values = {k: v for k, v in dict(airflow or {}).items() if k in cls.keys()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **overrides: Any) -> AirflowRenderOptions:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
