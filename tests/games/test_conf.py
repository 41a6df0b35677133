import re
from dataclasses import replace

import pytest

from core.env import ConfigError
from games.checks import games_settings_check
from games.models import Game
from jobsite.settings import games_settings


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SESSION_EXPIRY_MINUTES", "thirty", "SESSION_EXPIRY_MINUTES='thirty' is not a whole"),
        ("GAMES_DAILY_POOL_SHARE", "101", "GAMES_DAILY_POOL_SHARE=101 is outside"),
        (
            "GAMES_MAX_DURATION_SPACE_INVADERS",
            "0",
            "GAMES_MAX_DURATION_SPACE_INVADERS=0 is outside",
        ),
    ],
)
def test_a_bad_setting_names_its_variable(monkeypatch, name, value, message):
    # read once at start: the process stops (tests/test_foundation.py runs manage.py with one)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        games_settings()


def test_every_game_has_a_longest_duration_and_the_defaults_pass(settings):
    assert set(settings.GAMES.max_duration_minutes) == set(Game.values)
    assert games_settings_check() == []


def test_a_game_without_a_longest_duration_is_a_system_check_error(settings):
    durations = {game: 10 for game in Game.values if game != Game.PONG}
    settings.GAMES = replace(settings.GAMES, max_duration_minutes=durations)
    [error] = games_settings_check()
    assert error.id == "games.E001"
    assert "pong" in error.msg
