"""Notifications: an outbox written in the event's transaction, delivered by a scheduled job.

Delivery claims due rows with SELECT ... FOR UPDATE SKIP LOCKED, so any number of workers share
the outbox without waiting on each other and no row is claimed twice at once. Each row is sent
in a savepoint inside the claiming transaction and marked delivered in the same transaction:

- the default `InboxChannel` writes into the database, so delivery and the mark commit together
  (exactly once; the inbox row is also unique per notification);
- an external channel (e-mail, push) is at-least-once at worst: if the worker dies after the
  provider accepted the message and before COMMIT, the row is sent again. Such a channel should
  pass `notification.pk` to the provider as its idempotency key.

A failing channel leaves the row pending with attempts + 1, the error and a later
`next_attempt_at` (exponential backoff); after the last attempt it becomes `failed`, kept for the
admin to requeue. Nothing is ever deleted here, so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from games import conf
from games.models import InboxMessage, Notification


class NotificationChannel(Protocol):
    """Sends one notification or raises; it must not commit or roll back the transaction."""

    def send(self, notification: Notification, *, now: dt.datetime) -> None: ...


class InboxChannel:
    """Default channel: the player's in-app inbox, in the delivering transaction."""

    def send(self, notification: Notification, *, now: dt.datetime) -> None:
        InboxMessage.objects.create(
            notification=notification,
            player_id=notification.player_id,
            title=notification.title,
            body=notification.body,
            created_at=now,
        )


def notification_enqueue(
    *,
    player_id: int,
    kind: str,
    title: str,
    body: str = "",
    due_at: dt.datetime,
    dedupe_key: str | None = None,
) -> bool:
    """Add a notification to the outbox; with `dedupe_key`, at most once per key.

    Returns whether a row was added. Call it inside the transaction of the event it announces.
    """
    notification = Notification(
        player_id=player_id,
        kind=kind,
        title=title[:200],
        body=body,
        dedupe_key=dedupe_key,
        due_at=due_at,
        next_attempt_at=due_at,
        created_at=due_at,
    )
    if dedupe_key is None:
        notification.save()
        return True
    try:
        # A savepoint: the caller's transaction survives a duplicate key.
        with transaction.atomic():
            notification.save()
    except IntegrityError:
        if not Notification.objects.filter(dedupe_key=dedupe_key).exists():
            raise  # another constraint failed: a bug, not a duplicate
        return False
    return True


def _backoff(attempts: int, base_seconds: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(base_seconds * 2 ** (attempts - 1), 24 * 3600))


def notifications_deliver(
    *, now: dt.datetime, channel: NotificationChannel | None = None
) -> dict[str, int]:
    """Deliver due notifications in claimed batches until none is due at `now`."""
    settings = conf.load()
    channel = channel or import_string(settings.notification_channel)()
    counts = {"delivered": 0, "retried": 0, "failed": 0}
    while True:
        with transaction.atomic():
            batch = list(
                Notification.objects.select_for_update(skip_locked=True)
                .filter(status=Notification.Status.PENDING, next_attempt_at__lte=now)
                .order_by("next_attempt_at", "id")[: settings.notification_batch_size]
            )
            for notification in batch:
                try:
                    with transaction.atomic():  # a savepoint: a failed send undoes only itself
                        channel.send(notification, now=now)
                except Exception as exc:  # any channel failure is recorded and retried later
                    notification.attempts += 1
                    notification.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                    if notification.attempts >= settings.notification_max_attempts:
                        notification.status = Notification.Status.FAILED
                        counts["failed"] += 1
                    else:
                        notification.next_attempt_at = now + _backoff(
                            notification.attempts, settings.notification_retry_seconds
                        )
                        counts["retried"] += 1
                else:
                    notification.attempts += 1
                    notification.status = Notification.Status.DELIVERED
                    notification.delivered_at = now
                    counts["delivered"] += 1
                notification.save(
                    update_fields=[
                        "attempts",
                        "status",
                        "delivered_at",
                        "last_error",
                        "next_attempt_at",
                    ]
                )
        if len(batch) < settings.notification_batch_size:
            return counts
