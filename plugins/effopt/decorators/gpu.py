"""``@gpu_task``: a TaskFlow task that runs on leased GPUs.

::

    from effopt.decorators import gpu_task

    @gpu_task(gpus=1, gpu_memory_gib=16)
    def train(epochs: int) -> dict:
        import os
        print(os.environ["CUDA_VISIBLE_DEVICES"])  # this task's GPU, e.g. "GPU-5d1c4a6e-..." or "0"
        ...

Arguments are :class:`~effopt.operators.gpu.GpuTaskMixin`'s (``gpus``, ``gpu_milli``, ``gpu_memory_gib``,
``models``, ``policy``, ``tenant``) plus any ``@task`` argument (``retries``, ``pool`` to override the GPU pool,
...). The pool and its slots come from the request; the lease is taken before the function runs (the task waits
deferred while nothing fits), renewed while it runs and released when it ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk.bases.decorator import task_decorator_factory

from effopt.operators.gpu import GpuTaskMixin, gpu_pool, gpu_pool_slots


class _GpuPythonDecoratedOperator(GpuTaskMixin, _PythonDecoratedOperator):
    custom_operator_name = "@gpu_task"


def gpu_task(python_callable: Any = None, *, gpus: int = 1, gpu_milli: int | None = None,
             gpu_memory_gib: float | None = None, models: Iterable[str] | str | None = None, policy: str | None = None,
             tenant: str | None = None, gpu_wait_timeout_s: float | None = None, multiple_outputs: bool | None = None,
             gpu_policy: str | None = None, **kwargs: Any) -> Any:
    """Decorate a function into a GPU task (also ``@gpu_task`` without parentheses: one GPU); ``gpu_policy``,
    the operators' name for it, is the same as ``policy``."""
    if policy is not None and gpu_policy is not None and policy != gpu_policy:
        raise ValueError(f"@gpu_task got policy={policy!r} and gpu_policy={gpu_policy!r}: give one")
    policy = policy if policy is not None else gpu_policy
    # Pool and slots are set here, not only by the operator, so a mapped task (.expand) has them too.
    kwargs.setdefault("pool", gpu_pool(models, tenant))
    kwargs.setdefault("pool_slots", gpu_pool_slots(gpus, gpu_milli, gpu_memory_gib, models))
    return task_decorator_factory(
        python_callable=python_callable, multiple_outputs=multiple_outputs,
        decorated_operator_class=_GpuPythonDecoratedOperator, gpus=gpus, gpu_milli=gpu_milli,
        gpu_memory_gib=gpu_memory_gib, models=list(models) if isinstance(models, (list, tuple)) else models,
        gpu_policy=policy, tenant=tenant, gpu_wait_timeout_s=gpu_wait_timeout_s, **kwargs)
