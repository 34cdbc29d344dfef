"""Spot interruption notices and rebalance recommendations, from the instance metadata service or EventBridge.

Two sources, one :class:`Notice`:

* **IMDS** on the instance itself (:class:`Imds`, IMDSv2: a session token from
  ``PUT /latest/api/token``, sent as ``X-aws-ec2-metadata-token``):
  ``/latest/meta-data/spot/instance-action`` answers 404 until EC2 schedules
  the interruption, then ``{"action": "terminate"|"stop"|"hibernate", "time":
  ...}`` two minutes ahead; ``/latest/meta-data/events/recommendations/rebalance``
  answers 404 until a rebalance recommendation, then ``{"noticeTime": ...}``.
  AWS suggests polling every 5 seconds;
* **EventBridge** events delivered to an SQS queue (:func:`parse_event`): ``EC2
  Spot Instance Interruption Warning``, ``EC2 Instance Rebalance
  Recommendation`` and ``EC2 Instance State-change Notification`` (the last
  tells when the watched instances are gone).

Plain Python (``urllib``): the trigger runs these calls in a thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_IMDS = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
IDENTITY_PATHS = {"instance_id": "/latest/meta-data/instance-id", "instance_type": "/latest/meta-data/instance-type",
                  "zone": "/latest/meta-data/placement/availability-zone",
                  "az_id": "/latest/meta-data/placement/availability-zone-id",
                  "region": "/latest/meta-data/placement/region"}
INTERRUPTION = "interruption"
REBALANCE = "rebalance"
STATE = "state"
KINDS = (INTERRUPTION, REBALANCE)
GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
_DETAIL_TYPES = {"EC2 Spot Instance Interruption Warning": INTERRUPTION,
                 "EC2 Instance Rebalance Recommendation": REBALANCE,
                 "EC2 Instance State-change Notification": STATE}


@dataclass(frozen=True)
class Notice:
    """An interruption notice, a rebalance recommendation, or a state change of an instance."""

    kind: str
    instance_id: str | None
    source: str  # imds | sqs
    action: str | None = None  # terminate | stop | hibernate (interruptions)
    time: str | None = None  # when EC2 acts (interruptions) or noticed (rebalance), ISO 8601
    state: str | None = None  # the new state (state changes)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "instance_id": self.instance_id, "source": self.source, "action": self.action,
                "time": self.time, "state": self.state}


def _json(body: str | bytes | Mapping[str, Any]) -> Mapping[str, Any] | None:
    if isinstance(body, Mapping):
        return body
    try:
        doc = json.loads(body)
    except (TypeError, ValueError):
        return None
    return doc if isinstance(doc, Mapping) else None


def parse_instance_action(body: str | bytes) -> tuple[str, str | None] | None:
    """(action, time) of an ``spot/instance-action`` document, or None when it is not one."""
    doc = _json(body)
    if doc is None or not isinstance(doc.get("action"), str):
        return None
    return doc["action"], doc.get("time") if isinstance(doc.get("time"), str) else None


def parse_rebalance(body: str | bytes) -> str | None:
    """The ``noticeTime`` of a rebalance recommendation, or None when the body is not one."""
    doc = _json(body)
    if doc is None or not isinstance(doc.get("noticeTime"), str):
        return None
    return doc["noticeTime"]


def parse_event(body: str | bytes | Mapping[str, Any]) -> Notice | None:
    """The :class:`Notice` of an EventBridge EC2 event (an SQS message body), or None for anything else.

    An SNS envelope (``{"Type": "Notification", "Message": "<event>"}``) is unwrapped first.
    """
    doc = _json(body)
    if doc is None:
        return None
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        doc = _json(doc["Message"])
        if doc is None:
            return None
    kind = _DETAIL_TYPES.get(str(doc.get("detail-type") or ""))
    detail = doc.get("detail")
    if kind is None or not isinstance(detail, Mapping):
        return None
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str):
        return None
    when = doc.get("time") if isinstance(doc.get("time"), str) else None
    if kind == INTERRUPTION:
        return Notice(kind, instance_id, "sqs", action=str(detail.get("instance-action") or "terminate"), time=when)
    if kind == REBALANCE:
        return Notice(kind, instance_id, "sqs", time=when)
    return Notice(kind, instance_id, "sqs", state=str(detail.get("state") or ""), time=when)


def seconds_until(when: str | None, now: float) -> float | None:
    """Seconds from ``now`` (epoch) to an ISO 8601 time, or None when it cannot be read."""
    if not when:
        return None
    try:
        return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() - now
    except ValueError:
        return None


class ImdsError(RuntimeError):
    """The metadata service did not answer (not on EC2, or IMDS is off); ``transient`` for the trigger."""

    transient = True


class Imds:
    """An IMDSv2 client: one session token, renewed when it expires (401)."""

    def __init__(self, base_url: str = DEFAULT_IMDS, *, token_ttl_s: int = 21600, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_ttl_s = int(token_ttl_s)
        self.timeout_s = float(timeout_s)
        self._token: str | None = None

    def _open(self, req: urllib.request.Request) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise ImdsError(f"instance metadata service at {self.base_url} unreachable: {exc}") from exc

    def token(self) -> str:
        if self._token is None:
            req = urllib.request.Request(self.base_url + TOKEN_PATH, method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl_s)})
            status, body = self._open(req)
            if status != 200 or not body.strip():
                raise ImdsError(f"IMDSv2 token request answered HTTP {status}")
            self._token = body.strip()
        return self._token

    def get(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) of a metadata path, with the session token (renewed once on a 401)."""
        for _ in (0, 1):
            req = urllib.request.Request(self.base_url + path, headers={"X-aws-ec2-metadata-token": self.token()})
            status, body = self._open(req)
            if status != 401:
                return status, body
            self._token = None
        return status, body

    def identity(self) -> dict[str, str | None]:
        """This instance's id, type, zone, AZ ID and region (None where the service has no answer)."""
        out: dict[str, str | None] = {}
        for key, path in IDENTITY_PATHS.items():
            status, body = self.get(path)
            out[key] = body.strip() if status == 200 and body.strip() else None
        return out

    def poll(self, kinds: tuple[str, ...] = KINDS, instance_id: str | None = None) -> list[Notice]:
        """The notices the service shows now (empty while both paths answer 404)."""
        found: list[Notice] = []
        if INTERRUPTION in kinds:
            status, body = self.get(ACTION_PATH)
            parsed = parse_instance_action(body) if status == 200 else None
            if parsed is not None:
                found.append(Notice(INTERRUPTION, instance_id, "imds", action=parsed[0], time=parsed[1]))
            elif status not in (200, 404):
                raise ImdsError(f"{ACTION_PATH} answered HTTP {status}")
        if REBALANCE in kinds:
            status, body = self.get(REBALANCE_PATH)
            when = parse_rebalance(body) if status == 200 else None
            if when is not None:
                found.append(Notice(REBALANCE, instance_id, "imds", time=when))
            elif status not in (200, 404):
                raise ImdsError(f"{REBALANCE_PATH} answered HTTP {status}")
        return found
