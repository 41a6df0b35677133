"""Leaderboard writes: a session's score onto its three boards, and set-based ranking.

Rank order (DESIGN.md): higher score first, then the earlier achieved_at, then the lower id. With
`id` in the order no two rows tie, so ROW_NUMBER() and RANK() agree; ROW_NUMBER is used because it
is what "ranks run 1..N" means and needs no peer comparison.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import connection, transaction

from games.models import BoardPeriod, GameSession, LeaderboardEntry, PrizePool
from games.periods import current_boards, period_start

ENTRY_TABLE = LeaderboardEntry._meta.db_table
SESSION_TABLE = GameSession._meta.db_table


Board = tuple[str, str, dt.date]  # (game, period, period_start)


def board_entries_upsert(
    *,
    player_id: int,
    game: str,
    session_id: int,
    score: int,
    achieved_at: dt.datetime,
    periods: Iterable[str],
) -> int:
    """Put `score` on the player's boards of `periods` where it beats the stored best.

    One statement; an equal score keeps the earlier entry (it was achieved first). A changed or new
    entry keeps/gets a stale rank until the next ranking run. Returns rows written.
    """
    rows = [
        (player_id, game, period, period_start(period, achieved_at), score, achieved_at, session_id)
        for period in periods
    ]
    if not rows:
        return 0
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    sql = f"""
        INSERT INTO {ENTRY_TABLE}
            (player_id, game, period, period_start, score, achieved_at, session_id)
        VALUES {values}
        ON CONFLICT (player_id, game, period, period_start) DO UPDATE
            SET score = EXCLUDED.score,
                achieved_at = EXCLUDED.achieved_at,
                session_id = EXCLUDED.session_id
            WHERE {ENTRY_TABLE}.score < EXCLUDED.score
    """  # noqa: S608 -- table names are ours, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
        return cursor.rowcount


def board_entry_recompute(*, player_id: int, game: str, period: str, start: dt.date) -> str:
    """Rebuild one player's entry on one board from their counting sessions (after a void).

    Returns "updated", "deleted" or "unchanged". Counting sessions: finished, not voided, finished
    inside the period (any time for all-time).

    The rule of `game_session_finish` applies: the board of a daily/weekly pool that is closed
    (finalised or no_winner) is final, and no session's score is put onto it. Such a board only
    loses the player's entry if its session no longer counts (voided), and is then re-ranked, so
    its final ranks run 1..N again (the pool keeps its winner). A late session, finished inside
    the period but committed after the pool closed, therefore never reaches it; other sessions
    of the player in that period are not brought back either, as nothing records which of them
    were late. The caller holds the pool rows (locked daily, then weekly) before calling this.
    """
    if period != BoardPeriod.ALL_TIME:
        status = (
            PrizePool.objects.select_for_update()
            .filter(game=game, period=period, period_start=start)
            .values_list("status", flat=True)
            .first()
        )
        if status is not None and status != PrizePool.Status.OPEN:
            return _final_board_entry_drop(
                player_id=player_id, game=game, period=period, start=start
            )
    if period == BoardPeriod.ALL_TIME:
        window_sql, window_params = "", []
    else:
        begin = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
        length = dt.timedelta(days=1 if period == BoardPeriod.DAILY else 7)
        window_sql = "AND s.finished_at >= %s AND s.finished_at < %s"
        window_params = [begin, begin + length]
    # The best remaining session, in board order (score desc, earliest achievement, lowest id).
    best_sql = f"""
        SELECT s.id, s.score, s.finished_at FROM {SESSION_TABLE} s
        WHERE s.player_id = %s AND s.game = %s AND s.status = 'finished'
          AND s.voided_at IS NULL {window_sql}
        ORDER BY s.score DESC, s.finished_at ASC, s.id ASC LIMIT 1
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(best_sql, [player_id, game, *window_params])
        best = cursor.fetchone()
        key = [player_id, game, period, start]
        if best is None:
            cursor.execute(
                f"DELETE FROM {ENTRY_TABLE} WHERE player_id = %s AND game = %s "  # noqa: S608
                "AND period = %s AND period_start = %s",
                key,
            )
            return "deleted" if cursor.rowcount else "unchanged"
        cursor.execute(
            f"UPDATE {ENTRY_TABLE} SET session_id = %s, score = %s, achieved_at = %s "  # noqa: S608
            "WHERE player_id = %s AND game = %s AND period = %s AND period_start = %s "
            "AND (session_id IS DISTINCT FROM %s OR score <> %s)",
            [best[0], best[1], best[2], *key, best[0], best[1]],
        )
        return "updated" if cursor.rowcount else "unchanged"


def _final_board_entry_drop(*, player_id: int, game: str, period: str, start: dt.date) -> str:
    """On a final board: remove the player's entry if its session is voided; re-rank the board."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {ENTRY_TABLE} e USING {SESSION_TABLE} s "  # noqa: S608
            "WHERE e.session_id = s.id AND s.voided_at IS NOT NULL "
            "AND e.player_id = %s AND e.game = %s AND e.period = %s AND e.period_start = %s",
            [player_id, game, period, start],
        )
        deleted = cursor.rowcount
    if not deleted:
        return "unchanged"
    boards_rank([(game, period, start)])
    return "deleted"


def boards_mark_changed(boards: list[Board]) -> int:
    """Make the next ranking run re-rank `boards` (unrank one entry of each); returns boards
    marked. For bulk writers that skipped the database's own marks."""
    if not boards:
        return 0
    keys = ", ".join(["(%s, %s, %s)"] * len(boards))
    sql = f"""
        UPDATE {ENTRY_TABLE} SET rank = NULL
        WHERE id IN (SELECT min(id) FROM {ENTRY_TABLE}
                     WHERE (game, period, period_start) IN ({keys})
                     GROUP BY game, period, period_start)
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for board in boards for value in board])
        return cursor.rowcount


def board_has_unranked(board: Board) -> bool:
    """Whether `board` changed since it was last ranked (one of its entries has rank NULL).

    Reads the board's rows without sorting them (no index holds `rank`, so that ranking stays
    HOT): a fraction of what ranking the board costs. An aggregate over the board, not EXISTS:
    with statistics taken while ranks were NULL (e.g. right after a bulk load) the planner
    expected an unranked row at once and scanned the whole table for one that was not there
    (measured at 1M entries: ~0.2 s per board instead of ~0.03 s).
    """
    sql = f"""
        SELECT coalesce(bool_or(rank IS NULL), false) FROM {ENTRY_TABLE}
        WHERE game = %s AND period = %s AND period_start = %s
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, list(board))
        return bool(cursor.fetchone()[0])


def boards_changed(boards: list[Board]) -> list[Board]:
    """Those of `boards` that hold an unranked entry, i.e. changed since they were last ranked."""
    if not boards:
        return []
    keys = ", ".join(["(%s, %s, %s)"] * len(boards))
    sql = f"""
        SELECT DISTINCT game, period, period_start FROM {ENTRY_TABLE}
        WHERE (game, period, period_start) IN ({keys}) AND rank IS NULL
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for board in boards for value in board])
        found = set(cursor.fetchall())
    return [board for board in boards if board in found]


# One board's ranking: its rows in rank order (from entry_board_order, or one board's sort), the
# rows whose rank changes, written where the rank is still the one read (see `boards_rank`).
# ROW_NUMBER, not RANK: with `id` last in the order no two rows tie (module docstring).
_BOARD_RANK_SQL = f"""
    UPDATE {ENTRY_TABLE} AS e SET rank = changed.new_rank
    FROM (
        SELECT id, rank, new_rank FROM (
            SELECT id, rank,
                   ROW_NUMBER() OVER (ORDER BY score DESC, achieved_at ASC, id ASC) AS new_rank
            FROM {ENTRY_TABLE} WHERE game = %s AND period = %s AND period_start = %s
        ) ranked
        WHERE rank IS DISTINCT FROM new_rank
    ) changed
    WHERE e.id = changed.id AND e.rank IS NOT DISTINCT FROM changed.rank
      AND e.game = %s AND e.period = %s AND e.period_start = %s
"""  # noqa: S608 -- the table name is ours, the board is parameters


def boards_rank(boards: list[Board]) -> dict[Board, int]:
    """Rewrite the ranks of `boards`, one statement per board; only rows whose rank changes are
    written.

    Returns rows written per board (boards with nothing to write are absent). The window compares
    each row's new rank with its stored one in the same pass, so the UPDATE joins only the rows
    that change (few, after a first run) instead of whole boards; it touches only `rank`, which no
    index contains, so with the table's fillfactor the rows are HOT-updated. The rows to write
    are looked up on their board only, not in a scan of the whole table (which in production
    holds every past board).

    One statement per board, not one for all 15: for a board of 66k entries the rows to write
    fit the hash join's memory at the default work_mem (one batch; one statement for 15 boards
    spilled to 8-16), and the join then meets the board's rows in heap order, so the UPDATE goes
    page by page instead of in rank order (EXPLAIN ANALYZE: ~0.2 s of update per board against
    ~0.4 s per board's worth in the 15-board statement). Measured at 1M entries over 15 boards,
    interleaved rounds from all ranks NULL, `boards_changed` included: 0.77-0.83x the
    hand-written statement, against 1.26x for a UNION ALL of the boards in one statement and
    1.23-1.30x for one PARTITION BY sort of them all.
    Outside a transaction each board commits on its own, so a writer of an entry waits for one
    board's ranking at most, not for all of them; inside the caller's transaction (finalisation,
    cleanup) the boards are ranked in it.

    JIT is off for these statements: their time is in writing rows, and PostgreSQL 15 spent ~2 s
    compiling a 15-board statement (EXPLAIN ANALYZE at 1M entries). `SET LOCAL` lasts to the end
    of the caller's transaction, whose short statements gain nothing from JIT either.

    A row is written only if its rank is still the one the window read. A writer that changed the
    row meanwhile (a new score: its trigger set rank NULL; a delete: the trigger unranked this
    row) committed a mark saying "rank me again"; overwriting it with a rank computed from the
    older snapshot would make a changed board look ranked. With the check, PostgreSQL's re-check
    of the updated row after the writer's commit skips it, and the mark stays for the next run.
    """
    written: dict[Board, int] = {}
    for board in boards:
        # savepoint=False: inside a caller's transaction this adds no SAVEPOINT round trips.
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            cursor.execute(_BOARD_RANK_SQL, [*board, *board])
            if cursor.rowcount:
                written[board] = cursor.rowcount
    return written


def current_board_keys(now: dt.datetime, games: Iterable[str]) -> list[Board]:
    return [(game, period, start) for game in games for period, start in current_boards(now)]
