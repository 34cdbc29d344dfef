"""The effopt AirflowPlugin, loaded by the API server, the scheduler, the DAG processor and every task.

Invalid ``[effopt]`` configuration raises here, so Airflow lists it as a
plugin import error naming the key (``make run`` checks it before starting).

The effopt pages (:mod:`effopt.www`) are registered only in the API server:
importing the web stack costs seconds, which every task process would pay.
The API server has ``airflow.api_fastapi.app`` loaded when it loads plugins;
no other component does.
"""

from __future__ import annotations

import sys

from airflow.plugins_manager import AirflowPlugin

from effopt import listener
from effopt.airflow_settings import get_settings

_settings = get_settings()
_IN_API_SERVER = "airflow.api_fastapi.app" in sys.modules


class EffoptPlugin(AirflowPlugin):
    name = "effopt"
    listeners = [listener] if _settings.task_usage_listener else []
    if _IN_API_SERVER:
        from effopt.www import app as _www_app

        fastapi_apps = [{"app": _www_app, "url_prefix": "/effopt", "name": "effopt"}]
        external_views = [{"name": "effopt", "href": "/effopt/", "destination": "nav", "url_route": "effopt"}]
