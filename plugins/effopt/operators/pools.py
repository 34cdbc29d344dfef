"""The pools a DAG's tasks need exist before they are scheduled, or the run fails at once saying why.

Airflow leaves a task whose pool does not exist in ``scheduled`` forever (the
reason shows only in the scheduler's log).  :class:`EnsurePoolsOperator`
runs first (a setup task), creates each missing pool through the REST API
(never touching one that exists: its size is the operator's or effopt's
GPU pool sync's business), and fails without a retry when a pool cannot be
made or is too small for a task that needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from effopt.operators.errors import fail_fast


def pools_set_command(name: str, slots: int, description: str) -> str:
    return f"airflow pools set {name} {slots} '{description}'"


class EnsurePoolsOperator(BaseOperator):
    """Create missing pools over Airflow's REST API.

    :param pools: ``{name: {"slots": n, "description": text, "largest_request": k}}``; ``largest_request``
        is the most slots one task of the DAG asks for (a smaller pool could never run it)
    :param airflow_api_conn_id: the REST API connection (default ``[effopt] airflow_api_conn_id``)

    Returns (XCom) ``{name: "created" | "exists"}``.
    """

    template_fields: Sequence[str] = ("airflow_api_conn_id",)
    ui_color = "#e8f6f3"

    def __init__(self, *, pools: Mapping[str, Mapping[str, Any]], airflow_api_conn_id: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pools = {name: dict(spec) for name, spec in pools.items()}
        self.airflow_api_conn_id = airflow_api_conn_id

    @fail_fast
    def execute(self, context: Any) -> dict[str, str]:
        from effopt.hooks.airflow_api import AirflowApiHook

        hook = AirflowApiHook(self.airflow_api_conn_id)
        wanted = {name: (int(spec["slots"]), str(spec["description"])) for name, spec in self.pools.items()}
        try:
            done = hook.ensure_pools(wanted)
        except AirflowNotFoundException as exc:
            commands = "; ".join(pools_set_command(n, s, d) for n, (s, d) in wanted.items())
            raise AirflowFailException(
                f"this DAG's tasks need the pools {', '.join(sorted(wanted))}; effopt creates missing ones over "
                f"the REST API, but {exc}. Or create them yourself: {commands}"
            ) from exc
        existing = hook.pools()
        small = [f"{name} has {existing[name]['slots']} slot(s) but a task needs {spec['largest_request']}"
                 for name, spec in sorted(self.pools.items())
                 if name in existing and existing[name]["slots"] < int(spec.get("largest_request", 1))]
        if small:
            raise AirflowFailException(
                "pool too small, its tasks could never run: " + "; ".join(small)
                + " (raise the slots in Admin > Pools or with airflow pools set)"
            )
        for name, state in done.items():
            self.log.info("pool %s: %s (%s slots)", name, state, existing.get(name, {}).get("slots"))
        return done
