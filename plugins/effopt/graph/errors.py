"""Validation errors of computation graphs: every problem found, reported at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Longest name shown verbatim in a message; longer ones are shortened (fuzzed specs have huge names).
_SHOW = 60


def show(name: object) -> str:
    """``repr`` of a name, shortened when huge so messages stay readable."""
    text = str(name)
    if len(text) <= _SHOW:
        return repr(text)
    return repr(text[:_SHOW] + "...") + f" ({len(text)} chars)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph or a spec.

    ``kind`` is one of: ``spec`` (malformed or mistyped spec), ``missing-producer``,
    ``duplicate-producer``, ``cycle``, ``unresolvable-fn``, ``bad-param-type``,
    ``bad-argument`` (a parameter or input the function does not accept, or a
    required argument nobody supplies), ``capacity`` (a node needs more than the
    plan's capacity).  ``nodes`` names the nodes involved.
    """

    kind: str
    message: str
    nodes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


class GraphValidationError(ValueError):
    """A graph or spec is invalid; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: Iterable[Problem], source: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        where = f"graph spec {source}" if source else "graph"
        count = len(self.problems)
        lines = [f"{where} is invalid ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}
