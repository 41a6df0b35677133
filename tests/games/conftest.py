from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.apps import apps

from games.models import Badge, GameSession, Player
from games.services import game_session_finish, game_session_start, player_create


def at(*args: int) -> dt.datetime:
    """An aware UTC moment: at(2026, 3, 2, 23, 59)."""
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def badges(request: pytest.FixtureRequest) -> None:
    """The badges that games' migration 0002 writes, for every test in a database.

    A transactional test flushes every table when it ends, migration rows included; Django runs
    those tests last, but `make test` starts the long (transactional) ones first on each
    xdist worker (tests/conftest.py), so a test here must not rely on the migration's rows.
    """
    if request.node.get_closest_marker("django_db") is None:
        return  # pytest-django's own autouse fixture has opened the database by now
    if not Badge.objects.exists():
        migration = importlib.import_module("games.migrations.0002_database_tuning_and_badges")
        migration.add_badges(apps, None)


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
