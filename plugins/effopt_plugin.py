"""Loads the effopt plugin from Airflow's plugins folder.

When effopt is also pip-installed, its ``airflow.plugins`` entry point
registers the same plugin; this file then defines nothing, so Airflow does not
report a duplicate.
"""

from importlib.metadata import entry_points

if not any(ep.value.startswith("effopt.plugin") for ep in entry_points(group="airflow.plugins")):
    from effopt.plugin import EffoptPlugin

    __all__ = ["EffoptPlugin"]
