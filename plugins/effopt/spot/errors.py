"""The one exception type of :mod:`effopt.spot`: every message names the offending item."""

from __future__ import annotations


class SpotError(ValueError):
    """Bad input to the spot engine (a file, an instance type, a job parameter); the message names it."""


class TraceError(SpotError):
    """A spot trace file that cannot be read: unknown layout, empty data, a bad value."""


class UnknownInstanceType(SpotError):
    """An instance type the price catalog does not know."""
