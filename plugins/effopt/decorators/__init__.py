"""TaskFlow decorators."""

from effopt.decorators.cached import cached_task

__all__ = ["cached_task"]
