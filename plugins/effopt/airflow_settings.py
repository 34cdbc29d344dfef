"""The Airflow side of :mod:`effopt.config`: read ``[effopt]`` from Airflow's configuration."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from effopt.config import OPTIONS, Settings

if TYPE_CHECKING:
    from effopt.store import EffoptStore

_ENV_PREFIX = "AIRFLOW__EFFOPT__"


def airflow_home() -> str:
    from airflow.configuration import AIRFLOW_HOME

    return AIRFLOW_HOME


@cache
def get_settings() -> Settings:
    """Validated settings from ``airflow.cfg`` and ``AIRFLOW__EFFOPT__*``; raises ConfigError."""
    from airflow.configuration import conf

    section: dict[str, object] = dict(conf.getsection("effopt") or {}) if conf.has_section("effopt") else {}
    # conf.get sees AIRFLOW__EFFOPT__<KEY> (and _CMD/_SECRET) even when airflow.cfg has no [effopt].
    for option in OPTIONS:
        value = conf.get("effopt", option.key, fallback=None)
        if value is not None:
            section[option.key] = value
    # Unknown keys set through the environment are reported like unknown keys in airflow.cfg.
    for name in os.environ:
        if name.startswith(_ENV_PREFIX):
            # Airflow runs _CMD / _SECRET forms only for its own sensitive options, so
            # AIRFLOW__EFFOPT__STORE_URL_CMD is reported as the unknown key store_url_cmd.
            key = name[len(_ENV_PREFIX) :].lower()
            section.setdefault(key, os.environ[name])
    return Settings.from_mapping(section, airflow_home())


@cache
def get_store() -> EffoptStore:
    """The effopt store configured by ``[effopt] store_url`` (one per process)."""
    from effopt.store import EffoptStore

    settings = get_settings()
    return EffoptStore(settings.store_url, connect_timeout_s=settings.store_timeout_s)
