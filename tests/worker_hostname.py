"""``[core] hostname_callable`` of the scaled-out test topology's Celery workers.

Two workers on one machine would record the same host name for every task; each
gets ``EFFOPT_WORKER_HOSTNAME`` instead (``worker-a``, ``worker-b``), as two
machines (or two containers of docker-compose.yaml) would.  Airflow records it
for each task instance, and the task-usage listener writes it to the effopt store.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("EFFOPT_WORKER_HOSTNAME") or socket.getfqdn()
