"""Configuration errors fail a task at once; only transient errors are retried.

A task that fails because a connection is missing, a param is invalid or a
path does not exist fails the same way on every retry, minutes apart: the
user waits for nothing.  :func:`fail_fast` wraps an operator's ``execute`` and
turns such errors into :class:`AirflowFailException` (no retry), with a
message that names what to set.  Transient errors (timeouts, refused or reset
connections, a server's 5xx, errors a source marks ``transient``) and anything
unrecognised propagate unchanged, so Airflow retries them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from effopt.config import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

#: Errors that mean "the configuration is wrong": retrying cannot help.
CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, ValueError, TypeError, LookupError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
    PermissionError,
)


def aws_config_errors() -> tuple[type[BaseException], ...]:
    """botocore's "the AWS connection is incomplete" errors (no region, no or partial credentials): a retry
    finds the same connection."""
    try:
        from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError
    except ImportError:  # pragma: no cover - botocore comes with the amazon provider
        return ()
    return (NoRegionError, NoCredentialsError, PartialCredentialsError)


#: Errors that mean "try again later".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)

_CONN_ID = re.compile(r"conn_id [`'\"]?([\w.\-]+)[`'\"]? isn't defined")


def connection_env(conn_id: str) -> str:
    """The environment variable that defines connection ``conn_id`` (``AIRFLOW_CONN_<ID>``)."""
    return "AIRFLOW_CONN_" + re.sub(r"[^0-9A-Za-z]", "_", conn_id).upper()


def missing_connection(conn_id: str, *, what: str = "", example: str = "", param: str = "") -> str:
    """One line naming the connection, how to define it, and the DAG param that picks another one."""
    env = connection_env(conn_id)
    how = f"set {env}" + (f"='{example}'" if example else "") + " or add it under Admin > Connections"
    alt = f", or name another connection in the DAG param {param!r}" if param else ""
    return f"connection {conn_id!r}{f' ({what})' if what else ''} is not defined: {how}{alt}"


def is_transient(exc: BaseException) -> bool:
    """A timeout, a refused or reset connection, or an error a source marks ``transient = True``."""
    flag = getattr(exc, "transient", None)
    if flag is not None:
        return bool(flag)
    return isinstance(exc, TRANSIENT_ERRORS)


def _rejected_credentials(exc: BaseException) -> bool:
    """A server that refused the credentials (Redis AUTH): the same on every retry."""
    try:
        from redis.exceptions import AuthenticationError, AuthorizationError
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, (AuthenticationError, AuthorizationError))


def classify(exc: BaseException) -> str:
    """``config`` (fail now), ``transient`` (retry) or ``unknown`` (retry: it may be either)."""
    if isinstance(exc, AirflowFailException) or _rejected_credentials(exc):
        return "config"
    if is_transient(exc):
        return "transient"
    if getattr(exc, "transient", None) is False:  # its source says retrying cannot help (e.g. an HTTP 400)
        return "config"
    if isinstance(exc, (AirflowNotFoundException, *CONFIG_ERRORS, *aws_config_errors())):
        return "config"
    return "unknown"


def as_fail(exc: BaseException) -> AirflowFailException:
    if isinstance(exc, AirflowFailException):
        return exc
    if isinstance(exc, AirflowNotFoundException):
        m = _CONN_ID.search(str(exc))
        if m:
            return AirflowFailException(missing_connection(m.group(1)) + " (not retried)")
    text = str(exc) or type(exc).__name__
    return AirflowFailException(f"{text} (a configuration error: not retried)")


def fail_fast(execute: F) -> F:
    """Decorate ``execute``: configuration errors become :class:`AirflowFailException`, the rest propagates."""

    @functools.wraps(execute)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return execute(self, *args, **kwargs)
        except AirflowException as exc:
            if isinstance(exc, AirflowNotFoundException):
                raise as_fail(exc) from exc
            raise  # Airflow's own control flow (defer, skip, fail) goes through untouched
        except Exception as exc:  # noqa: BLE001 - classified, then re-raised as it was or as a fail
            if classify(exc) == "config":
                raise as_fail(exc) from exc
            raise

    return wrapper  # type: ignore[return-value]
