"""The task that runs one (fused) node of a compiled computation graph."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from effopt.graph.model import Node, call_node
from effopt.graph.options import AirflowRenderOptions
from effopt.graph.values import ValueCodec, ValueStore, is_reference

_MISSING_XCOM = object()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


class GraphNodeOperator(BaseOperator):
    """Runs one (fused) graph node: pulls its inputs, calls the function, pushes each output.

    ``sources`` maps each data item the node reads to ``("input", name)`` (a
    graph input, read from the run's params/conf) or ``("task", task_id)``
    (an XCom of that task whose key is the data name).
    """

    ui_color = "#e3f1e8"

    def __init__(
        self,
        *,
        node: Node,
        sources: Mapping[str, tuple[str, str]],
        value_store: ValueStore,
        readers: Sequence[ValueStore] = (),
        xcom_max_bytes: int = AirflowRenderOptions().xcom_max_bytes,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.node = node
        self.sources = dict(sources)
        self.value_store = value_store
        self.readers = tuple(readers)
        self.xcom_max_bytes = xcom_max_bytes

    def execute(self, context: Any) -> None:
        from effopt.hooks.cache import fallback_keys, signing_key

        codec = ValueCodec(
            self.value_store, max_inline_bytes=self.xcom_max_bytes, readers=self.readers, signing_key=signing_key(),
            fallback_keys=fallback_keys(),
        )
        ti = context["ti"]
        params = context["params"]
        run = _UNSAFE.sub("_", str(context["run_id"]))
        try:  # before the inputs are read: retention keeps a run one of whose tasks is starting
            self.value_store.mark_run_active(f"{self.dag_id}/{run}")
        except Exception as exc:  # noqa: BLE001 - a task whose values all fit in XCom needs no storage
            self.log.warning("could not mark run %s active in the graph value storage (%s: %s); values of runs "
                             "older than [effopt] graph_retention_days may be removed under it",
                             run, type(exc).__name__, exc)
        values: dict[str, Any] = {}
        for data, (kind, where) in self.sources.items():
            if kind == "input":
                if data not in params:
                    raise ValueError(f"graph input {data!r} is missing: pass it in the DAG run conf")
                values[data] = params[data]
            else:
                raw = ti.xcom_pull(task_ids=where, key=data, default=_MISSING_XCOM)
                if raw is _MISSING_XCOM:
                    raise ValueError(f"node {self.node.id!r}: no XCom {data!r} from task {where!r}")
                values[data] = codec.decode(raw)
        outputs = call_node(self.node, values)
        for name, value in outputs.items():
            encoded = codec.encode(value, f"{self.dag_id}/{run}/{self.task_id}/{name}")
            ti.xcom_push(key=name, value=encoded)
            how = "by reference" if is_reference(encoded) else "inline"
            self.log.info("output %s: %s pushed %s", name, type(value).__name__, how)
