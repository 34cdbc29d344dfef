"""``CacheReferenceXCom``: an XCom backend that hands downstream tasks the value behind a cache reference.

``@cached_task`` pushes large results as small cache references.  With

    [core]
    xcom_backend = effopt.xcom.CacheReferenceXCom

(set by ``make run`` and docker-compose.yaml) every task that pulls such an
XCom receives the value itself.  The API server and the UI never resolve
references: they show the small reference.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.xcom import BaseXCom


class CacheReferenceXCom(BaseXCom):
    @staticmethod
    def deserialize_value(result: Any) -> Any:
        value = BaseXCom.deserialize_value(result)
        from effopt.cache import is_cache_reference

        if is_cache_reference(value):
            from effopt.hooks.cache import task_cache

            return task_cache("airflow").resolve(value)
        return value
