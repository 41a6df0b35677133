"""leaderboard-ranking: rewrite the ranks of the current boards, set-based."""

from __future__ import annotations

import datetime as dt

from games.models import Game
from games.services.boards import boards_changed, boards_rank, current_board_keys


def leaderboard_rank_all(*, now: dt.datetime) -> dict[str, int]:
    """Rank the current boards (5 games x daily, weekly, all-time at `now`) that changed.

    A board changed since its last ranking iff it holds an unranked entry (database triggers
    unrank an entry when it is inserted or its score changes, and one entry of a board when an
    entry is deleted; migration 0003). Changed boards are ranked in one statement that writes only
    rows whose rank differs; unchanged boards are neither sorted nor written, so a run with
    nothing changed costs one scan for NULL ranks and writes 0 rows.

    Returns rows written per board ("snake.daily": n; boards with nothing written are omitted),
    "rows_written", "boards" (current boards) and "boards_ranked" (the changed ones).
    """
    boards = current_board_keys(now, Game.values)
    changed = boards_changed(boards)
    written = boards_rank(changed)
    counts = {f"{game}.{period}": rows for (game, period, _start), rows in sorted(written.items())}
    counts["rows_written"] = sum(written.values())
    counts["boards"] = len(boards)
    counts["boards_ranked"] = len(changed)
    return counts
