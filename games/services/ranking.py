"""leaderboard-ranking: rewrite the ranks of the current boards, set-based, and of the boards of
ended periods whose pool is still open (so that finalisation finds them ranked)."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from games.models import Game, PrizePool
from games.periods import period_end, utc_date
from games.services.boards import Board, boards_changed, boards_rank, current_board_keys


def ended_open_board_keys(now: dt.datetime) -> list[Board]:
    """Boards whose period ended by `now` and whose pool is still open (not finalised yet).

    One probe of the partial index `pool_open_start` (open pools only): normally empty, except
    between midnight and the finalisation run (the day that ended, on Mondays the week too) or
    while finalisation is late. Oldest first, as finalisation takes them.
    """
    pools = (
        PrizePool.objects.filter(status=PrizePool.Status.OPEN, period_start__lt=utc_date(now))
        .order_by("period_start", "period", "game")
        .values_list("game", "period", "period_start")
    )
    return [
        (game, period, start) for game, period, start in pools if period_end(period, start) <= now
    ]


def ended_boards_rank(boards: list[Board]) -> tuple[dict[Board, int], list[Board], int]:
    """Rank those of `boards` (ended periods, open pools) that changed since their last ranking.

    One board at a time, in finalisation's order, each in its own transaction holding its pool's
    row (FOR UPDATE SKIP LOCKED), the lock finalisation and every writer of such a board take
    first: a finalisation that reaches the pool meanwhile waits and then finds the board ranked,
    instead of ranking it from another snapshot at the same time (two rankers of one board from
    different snapshots could leave a mix of both). Finalisation thus follows this run board by
    board, and a late game waits for one board's ranking at most. A pool whose row is held by
    someone else (being finalised, a late game being written) is skipped: its holder or
    finalisation ranks that board. SKIP LOCKED never waits, so no lock order is needed. A pool
    closed meanwhile is not selected (its board is final). One board is read in rank order from
    the entry_board_order index, without a sort (measured at 1M entries: faster than one sorted
    scan of the ten boards of a Monday).

    Returns (rows written per board, boards ranked, changed boards left alone because their
    pool's row was busy or closed meanwhile).
    """
    written: dict[Board, int] = {}
    ranked: list[Board] = []
    changed = boards_changed(boards)
    for board in changed:
        game, period, start = board
        with transaction.atomic():
            held = list(
                PrizePool.objects.select_for_update(skip_locked=True)
                .filter(game=game, period=period, period_start=start, status=PrizePool.Status.OPEN)
                .values_list("id", flat=True)
            )
            if held:
                written.update(boards_rank([board]))
                ranked.append(board)
    return written, ranked, len(changed) - len(ranked)


def leaderboard_rank_all(*, now: dt.datetime) -> dict[str, int]:
    """Rank the current boards (5 games x daily, weekly, all-time at `now`) that changed, and the
    boards of ended periods whose pool is still open that changed (first: finalisation, 30 s
    after the run at midnight, then finds them ranked and writes nothing).

    A board changed since its last ranking iff it holds an unranked entry (database triggers
    unrank an entry when it is inserted or its score changes, and one entry of a board when an
    entry is deleted; migration 0003). Changed boards are ranked one statement and transaction
    each, writing only rows whose rank differs; unchanged boards are neither sorted nor written,
    so a run with nothing changed costs one scan for NULL ranks and writes 0 rows. Boards of
    finalised pools are never touched (their ranks are final); ended boards are ranked while
    holding their pool's row, see `ended_boards_rank`. Finalisation does not depend on this run:
    it ranks a board itself if it finds it changed.

    Returns rows written per board ("snake.daily": n for current boards,
    "snake.daily.2026-03-08": n for ended ones; boards with nothing written are omitted),
    "rows_written", "boards" (current boards), "ended_boards" (ended boards of open pools),
    "boards_ranked" (the changed ones ranked, both kinds) and "ended_boards_busy" (changed ended
    boards left alone because their pool's row was held by someone else or closed meanwhile).
    """
    ended = ended_open_board_keys(now)
    ended_written, ended_ranked, busy = ended_boards_rank(ended)
    boards = current_board_keys(now, Game.values)
    changed = boards_changed(boards)
    written = boards_rank(changed)
    counts = {f"{game}.{period}": rows for (game, period, _start), rows in sorted(written.items())}
    counts.update(
        {
            f"{game}.{period}.{start.isoformat()}": rows
            for (game, period, start), rows in sorted(ended_written.items())
        }
    )
    counts["rows_written"] = sum(written.values()) + sum(ended_written.values())
    counts["boards"] = len(boards)
    counts["ended_boards"] = len(ended)
    counts["boards_ranked"] = len(changed) + len(ended_ranked)
    counts["ended_boards_busy"] = busy
    return counts
