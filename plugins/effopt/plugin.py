"""The effopt AirflowPlugin, loaded by the API server, the scheduler, the DAG processor and every task.

Invalid ``[effopt]`` configuration raises here, so Airflow lists it as a
plugin import error naming the key (``make run`` checks it before starting).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from effopt import listener
from effopt.airflow_settings import get_settings

_settings = get_settings()


class EffoptPlugin(AirflowPlugin):
    name = "effopt"
    listeners = [listener] if _settings.task_usage_listener else []
