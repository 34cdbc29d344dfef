"""Waits in the triggerer for a spot interruption notice or a rebalance recommendation.

Sources (:mod:`effopt.spot.interruptions`): an SQS queue fed by EventBridge for a fleet's instances (``sqs``,
through the amazon provider's :class:`~airflow.providers.amazon.aws.hooks.sqs.SqsHook`), or the instance
metadata service (``imds``: IMDSv2), which answers for the machine that asks: the sensor polls it in its own
task, on the instance, and never defers with it (a triggerer runs elsewhere).

One queue per fleet (one EventBridge rule per fleet, matching its instance ids or tags) is best: a shared
queue makes every watcher read the others' messages.  A shared queue still works: messages about other
instances go back at once, and EC2 events older than :data:`FOREIGN_MESSAGE_MAX_AGE_S` about instances nobody
here watches are deleted, so they cannot pile up past what one poll reads (:data:`SQS_BATCHES` x 10).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from effopt.spot.interruptions import DEFAULT_IMDS, GONE_STATES, KINDS, STATE, Imds, Notice, parse_event

#: Messages one SQS poll reads at most (10 per receive, EventBridge may have queued more than ours).
SQS_BATCHES = 10
#: Age (from SQS's ``SentTimestamp``) past which an EC2 event about an instance this watcher does not watch is
#: deleted instead of put back.  Every watcher reads the queue at least every 300 s (the most ``[effopt]
#: spot_interruption_poll_s`` allows), so the watcher of that instance has had two polls to take it; and an
#: interruption warning is two minutes ahead of the reclaim, so by then its instance is gone.  Kept, such
#: messages would fill the first SQS_BATCHES x 10 a poll reads and hide the watched instance's notice.
FOREIGN_MESSAGE_MAX_AGE_S = 600.0


def poll_sqs(aws_conn_id: str, queue_url: str, watched: Sequence[str], *, client: Any = None,
             now: float | None = None) -> list[Notice]:
    """The notices about ``watched`` instances in the queue now; those are deleted.  EC2 events about other
    instances sent more than :data:`FOREIGN_MESSAGE_MAX_AGE_S` before ``now`` are deleted too; the other
    messages are made visible again at once (another watcher's fleet may share the queue)."""
    if client is None:
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        client = SqsHook(aws_conn_id=aws_conn_id).conn
    t = time.time() if now is None else now
    mine: list[Notice] = []
    others: list[str] = []
    ids = set(watched)
    for _ in range(SQS_BATCHES):
        resp = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                      VisibilityTimeout=30, AttributeNames=["SentTimestamp"])
        messages = resp.get("Messages") or []
        for message in messages:
            notice = parse_event(message.get("Body") or "")
            if notice is not None and notice.instance_id in ids:
                mine.append(notice)
                client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            elif notice is not None and _age_s(message, t) > FOREIGN_MESSAGE_MAX_AGE_S:
                client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            else:
                others.append(message["ReceiptHandle"])
        if len(messages) < 10:
            break
    for handle in others:
        client.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return mine


def _age_s(message: Any, now: float) -> float:
    """Seconds since SQS received ``message`` (its ``SentTimestamp``, ms); 0 when it does not say."""
    try:
        sent = float((message.get("Attributes") or {})["SentTimestamp"]) / 1000.0
    except (KeyError, TypeError, ValueError):
        return 0.0
    return now - sent


class SpotInterruptionTrigger(BaseTrigger):
    """Polls every ``poll_interval_s`` (AWS suggests 5 s) for a notice about the watched instances.

    Fires ``{"status": "interruption" | "rebalance", "notice": {...}, "identity": {...}, "polls": n}`` on the
    first notice of a kind in ``kinds``; ``{"status": "finished", ...}`` once every watched instance has left
    the running state (SQS state-change events: the work is over); ``{"status": "timeout"}`` at
    ``timeout_at``.  A source that cannot be reached is asked again at the next poll and reported in the
    triggerer's log; it never ends the wait.
    """

    def __init__(self, source: str, *, instance_ids: Sequence[str] = (), queue_url: str = "", aws_conn_id: str = "",
                 imds_url: str = DEFAULT_IMDS, kinds: Sequence[str] = KINDS, poll_interval_s: float = 5.0,
                 timeout_at: float | None = None) -> None:
        super().__init__()
        if source not in ("imds", "sqs"):
            raise ValueError(f"interruption source {source!r}: use imds or sqs")
        self.source = source
        self.instance_ids = [str(i) for i in instance_ids]
        self.queue_url = queue_url
        self.aws_conn_id = aws_conn_id
        self.imds_url = imds_url
        self.kinds = [str(k) for k in kinds]
        self.poll_interval_s = float(poll_interval_s)
        self.timeout_at = timeout_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("effopt.triggers.spot.SpotInterruptionTrigger", {
            "source": self.source, "instance_ids": list(self.instance_ids), "queue_url": self.queue_url,
            "aws_conn_id": self.aws_conn_id, "imds_url": self.imds_url, "kinds": list(self.kinds),
            "poll_interval_s": self.poll_interval_s, "timeout_at": self.timeout_at})

    def _poll(self, imds: Imds | None, identity: dict[str, Any]) -> list[Notice]:
        if self.source == "imds":
            assert imds is not None
            if not identity:
                identity.update(imds.identity())
            return imds.poll(tuple(k for k in self.kinds if k in KINDS), identity.get("instance_id"))
        client = getattr(self, "_sqs", None)
        if client is None:
            from airflow.providers.amazon.aws.hooks.sqs import SqsHook

            client = self._sqs = SqsHook(aws_conn_id=self.aws_conn_id).conn  # one client for the whole wait
        return poll_sqs(self.aws_conn_id, self.queue_url, self.instance_ids, client=client)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        imds = Imds(self.imds_url) if self.source == "imds" else None
        identity: dict[str, Any] = {}
        gone: set[str] = set()
        polls = 0
        while True:
            polls += 1
            try:
                notices = await asyncio.to_thread(self._poll, imds, identity)
            except Exception as exc:  # noqa: BLE001 - an outage is reported and the wait goes on
                self.log.warning("effopt: interruption watch (%s) could not poll (%s: %s); trying again in %.0f s",
                                 self.source, type(exc).__name__, exc, self.poll_interval_s)
                notices = []
            for notice in notices:
                if notice.kind in self.kinds:
                    yield TriggerEvent({"status": notice.kind, "notice": notice.as_dict(), "identity": identity,
                                        "polls": polls, "at": time.time()})
                    return
                if notice.kind == STATE and notice.state in GONE_STATES:
                    gone.add(str(notice.instance_id))
            if self.instance_ids and gone >= set(self.instance_ids):
                yield TriggerEvent({"status": "finished", "instances": sorted(gone), "polls": polls, "at": time.time()})
                return
            if self.timeout_at is not None and time.time() >= self.timeout_at:
                yield TriggerEvent({"status": "timeout", "polls": polls, "at": time.time()})
                return
            await asyncio.sleep(self.poll_interval_s)
