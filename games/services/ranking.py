"""leaderboard-ranking: rewrite the ranks of the current boards, set-based."""

from __future__ import annotations

import datetime as dt

from games.models import Game
from games.services.boards import boards_rank, current_board_keys


def leaderboard_rank_all(*, now: dt.datetime) -> dict[str, int]:
    """Rank the 15 current boards (5 games x daily, weekly, all-time) at `now` in one statement.

    Rows whose rank is already right are not written, so a run over unchanged boards writes 0 rows
    and costs one read of the boards. Returns rows written per board ("snake.daily": n, boards with
    nothing to write are omitted), the total ("rows_written") and "boards" (how many were ranked).
    """
    boards = current_board_keys(now, Game.values)
    written = boards_rank(boards)
    counts = {f"{game}.{period}": rows for (game, period, _start), rows in sorted(written.items())}
    counts["rows_written"] = sum(written.values())
    counts["boards"] = len(boards)
    return counts
