"""Players and game sessions: start, report, finish (boards + pools + signal), void."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from games import conf
from games.models import BoardPeriod, Game, GameSession, Player, PoolPeriod, PrizePool
from games.money import ZERO, money_exact, split
from games.periods import period_start
from games.services.boards import board_entries_upsert, board_entry_recompute
from games.services.pools import prize_pool_add, prize_pool_lock
from games.signals import session_finished


class SessionStateError(ValueError):
    """The session is not in a state that allows this action; the message says which."""


def player_create(*, handle: str, wallet_address: str = "") -> Player:
    return Player.objects.create(handle=handle, wallet_address=wallet_address)


def game_session_start(
    *,
    player_id: int,
    game: str,
    entry_fee: Decimal | int | str = ZERO,
    now: dt.datetime | None = None,
) -> GameSession:
    if game not in Game.values:
        raise ValueError(f"unknown game {game!r}; one of {', '.join(Game.values)}")
    # Never rounded: a fee in fractions of a cent or below zero is refused, naming the field.
    fee = money_exact(entry_fee, field="entry_fee")
    return GameSession.objects.create(
        player_id=player_id, game=game, entry_fee=fee, started_at=now or timezone.now()
    )


def game_session_report_score(
    *, session_id: int, score: int, now: dt.datetime | None = None
) -> None:
    """Record the game's current score; only an active session accepts one."""
    if score < 0:
        raise ValueError("a score is never negative")
    updated = GameSession.objects.filter(pk=session_id, status=GameSession.Status.ACTIVE).update(
        score=score, last_score_at=now or timezone.now()
    )
    if not updated:
        raise SessionStateError(f"session {session_id} is not active")


def _entry_fee_into_pools(session: GameSession, now: dt.datetime) -> list[str]:
    """Split the session's entry fee into the game's daily and weekly pools of `now`.

    GAMES_DAILY_POOL_SHARE percent (rounded half-even) to the daily pool, the exact rest to the
    weekly one; pools are created on demand, and a share for a pool already closed goes to the
    next open one. Returns the pool periods whose board is still open at `now` (the pool is open,
    or absent). The caller holds the session row, in its transaction: that is what makes the fee
    go in once. Pool rows are locked in a fixed order (daily, then weekly) by every writer.
    """
    daily_share, weekly_share = split(
        session.entry_fee, share_percent=conf.load().daily_pool_share_percent
    )
    periods = []
    for period, share in ((PoolPeriod.DAILY, daily_share), (PoolPeriod.WEEKLY, weekly_share)):
        start = period_start(period, now)
        if share > ZERO:
            # Locks (creates) the pool of `start` first; it took the share iff it is open.
            pool = prize_pool_add(
                game=session.game, period=period, period_start=start, amount=share
            )
            board_open = pool.period_start == start
        else:
            pool = prize_pool_lock(
                game=session.game, period=period, period_start=start, create=False
            )
            board_open = pool is None or pool.status == PrizePool.Status.OPEN
        if board_open:
            periods.append(period)
    return periods


def game_session_finish(
    *, session_id: int, score: int | None = None, now: dt.datetime | None = None
) -> GameSession:
    """Finish an active session, in one transaction:

    - the session becomes `finished` at `now` with `score` (default: its last reported score);
    - the player's daily, weekly and all-time boards of that game take the score where it beats
      their best (achieved_at = finished_at);
    - the entry fee is split between the open daily and weekly pools of that game
      (GAMES_DAILY_POOL_SHARE percent to the daily one, the exact rest to the weekly one);
      pools are created on demand;
    - `session_finished` is sent, so receivers write in this same transaction.

    Finishing a finished session again returns it unchanged (a client retrying "finish" is safe);
    an expired one raises SessionStateError. If a period's pool is already closed (finalised
    before this commit), its board is final: the score is not added there and the pool share goes
    to the next open pool.
    """
    now = now or timezone.now()
    with transaction.atomic():
        session = GameSession.objects.select_for_update().get(pk=session_id)
        if session.status == GameSession.Status.FINISHED:
            return session
        if session.status != GameSession.Status.ACTIVE:
            raise SessionStateError(f"session {session_id} is {session.status}")
        if score is not None:
            if score < 0:
                raise ValueError("a score is never negative")
            session.score = score
        session.status = GameSession.Status.FINISHED
        session.finished_at = now
        session.save(update_fields=["score", "status", "finished_at"])

        periods = [BoardPeriod.ALL_TIME, *_entry_fee_into_pools(session, now)]
        board_entries_upsert(
            player_id=session.player_id,
            game=session.game,
            session_id=session.pk,
            score=session.score,
            achieved_at=now,
            periods=periods,
        )
        session_finished.send(sender=GameSession, session=session)
    return session


def game_session_expire(*, session_id: int, now: dt.datetime) -> bool:
    """Expire an abandoned session: active, never reported a score, started more than
    SESSION_EXPIRY_MINUTES before `now`. Returns False (and changes nothing) for any other.

    Rule for money: an expired session's entry fee is not lost and not refunded; it goes into the
    pools exactly as at a finish at `now` (`_entry_fee_into_pools`: the daily/weekly pools open at
    `now`, never a closed one), in the same transaction as the status change under the session's
    row lock. The status change happens once, so the fee goes in once: running it again, or
    racing a finish, adds nothing. An expired session has no score: no board, no
    `session_finished` (it is not a finished session, so it yields no referral reward).
    """
    cutoff = now - dt.timedelta(minutes=conf.load().session_expiry_minutes)
    with transaction.atomic():
        session = GameSession.objects.select_for_update().get(pk=session_id)
        if (
            session.status != GameSession.Status.ACTIVE
            or session.last_score_at is not None
            or session.started_at >= cutoff
        ):
            return False
        session.status = GameSession.Status.EXPIRED
        session.save(update_fields=["status"])
        if session.entry_fee > ZERO:
            _entry_fee_into_pools(session, now)
    return True


def game_session_void(*, session_id: int, now: dt.datetime | None = None) -> dict[str, int]:
    """Staff action: a finished session stops counting on boards.

    Each board entry that this session holds is rebuilt from the player's other counting sessions
    of that period, or removed when none is left; the board of a closed pool is final and only
    loses the entry (see `board_entry_recompute`). Money already in pools stays there (a void is
    not a refund), and a pool already finalised keeps its winner. Voiding twice changes nothing.

    The session's daily and weekly pool rows are locked (daily, then weekly: the order of finish
    and finalisation, so no deadlock) before any entry changes: a finaliser of those pools waits
    for this transaction and then reads the rebuilt board, never the voided entry.
    """
    now = now or timezone.now()
    counts = {"updated": 0, "deleted": 0, "unchanged": 0}
    with transaction.atomic():
        session = GameSession.objects.select_for_update().get(pk=session_id)
        if session.status != GameSession.Status.FINISHED:
            raise SessionStateError(f"session {session_id} is {session.status}; cannot void")
        if session.voided_at is not None:
            return counts
        assert session.finished_at is not None  # a finished session has one (constraint)
        for period in (PoolPeriod.DAILY, PoolPeriod.WEEKLY):
            prize_pool_lock(
                game=session.game,
                period=period,
                period_start=period_start(period, session.finished_at),
                create=False,
            )
        session.voided_at = now
        session.save(update_fields=["voided_at"])
        for entry in session.board_entries.select_for_update():
            outcome = board_entry_recompute(
                player_id=entry.player_id,
                game=entry.game,
                period=entry.period,
                start=entry.period_start,
            )
            counts[outcome] += 1
    return counts
