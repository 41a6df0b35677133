"""Payout holds: staff stop and resume a player's payouts. Each hold row is its own audit record
(who held, when, why; who released, when); the admin also writes Django's LogEntry.

A hold is read by settlement when it claims items, so it applies to every batch that starts after
the hold commits; a batch already in flight for that player finishes.
"""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.utils import timezone

from referrals.models import PayoutHold


def payout_hold(
    *, player_id: int, reason: str, user_id: int | None = None, now: dt.datetime | None = None
) -> PayoutHold:
    """Hold the player's payouts; holding a held player returns the active hold unchanged."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a payout hold needs a reason")
    now = now or timezone.now()
    try:
        with transaction.atomic():
            return PayoutHold.objects.create(
                player_id=player_id, reason=reason[:200], held_by_id=user_id, held_at=now
            )
    except IntegrityError:
        # The partial unique constraint: one active hold per player.
        return PayoutHold.objects.get(player_id=player_id, released_at__isnull=True)


def payout_release(
    *, player_id: int, user_id: int | None = None, now: dt.datetime | None = None
) -> bool:
    """Release the player's active hold; returns False when there was none."""
    now = now or timezone.now()
    released = PayoutHold.objects.filter(player_id=player_id, released_at__isnull=True).update(
        released_at=now, released_by_id=user_id
    )
    return released > 0


def payout_is_held(*, player_id: int) -> bool:
    return PayoutHold.objects.filter(player_id=player_id, released_at__isnull=True).exists()
