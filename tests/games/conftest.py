from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest

from games.models import GameSession, Player
from games.services import game_session_finish, game_session_start, player_create


def at(*args: int) -> dt.datetime:
    """An aware UTC moment: at(2026, 3, 2, 23, 59)."""
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.fixture
def make_player() -> Callable[..., Player]:
    counter = iter(range(1, 10**9))

    def make(handle: str | None = None) -> Player:
        return player_create(handle=handle or f"player-{next(counter)}", wallet_address="0xabc")

    return make


@pytest.fixture
def play(make_player: Callable[..., Player]) -> Callable[..., GameSession]:
    """Start and finish one session: play(player, "snake", score=10, at=..., fee="1.00")."""

    def run(
        player: Player | None = None,
        game: str = "snake",
        *,
        score: int,
        when: dt.datetime,
        fee: str | Decimal = "0.00",
    ) -> GameSession:
        player = player or make_player()
        session = game_session_start(
            player_id=player.pk, game=game, entry_fee=fee, now=when - dt.timedelta(minutes=5)
        )
        return game_session_finish(session_id=session.pk, score=score, now=when)

    return run
