"""The effopt pages of the Airflow UI, served by the API server at ``/effopt``.

Every route requires Airflow authentication (the UI's session cookie or a
``Bearer`` token from ``POST /auth/token``), and rows are shown only for
DAGs the user may read (see :mod:`effopt.www.data`).

- ``/effopt/``: the dashboard (:mod:`effopt.www.page`), also in the UI's navigation as "effopt": the latest
  waste report, the current right-sizing recommendations with their money, measured usage per task, the
  computation cache's hits and time saved, and the changes right-sizing applied.
- ``/effopt/reports/waste/{id}`` and ``/effopt/reports/waste/latest``: a rendered waste report, as emailed.
- JSON: ``/effopt/api/task-usage``, ``/effopt/api/cache``, ``/effopt/api/rightsizing`` (applied changes),
  ``/effopt/api/rightsizing/plan`` (the latest plan), ``/effopt/api/waste`` (the latest report),
  ``/effopt/api/gpu`` (GPU inventory, pools, leases, fragmentation).
- ``/effopt/api/spot``: spot placement: decisions, fleets launched with their cost so far, interruptions,
  fallbacks, pod disruptions and orphans terminated (the page's spot section).
"""

from effopt.www.app import app

__all__ = ["app"]
