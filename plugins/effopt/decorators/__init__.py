"""TaskFlow decorators: ``cached_task`` and ``gpu_task`` (loaded on first use: it brings the GPU placement engine)."""

from effopt.decorators.cached import cached_task

__all__ = ["cached_task"]


def __getattr__(name: str):
    if name == "gpu_task":  # imports the GPU placement engine: only for DAGs that use it
        from effopt.decorators.gpu import gpu_task

        return gpu_task
    raise AttributeError(f"module 'effopt.decorators' has no attribute {name!r}")
