"""System check: the games settings group covers every game (a game added to `Game` needs its
longest duration in `games.conf.DEFAULT_MAX_DURATION_MINUTES`)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register


@register()
def games_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from games import conf
    from games.models import Game

    configured = set(conf.load().max_duration_minutes)
    if configured == set(Game.values):
        return []
    return [
        Error(
            "settings.GAMES.max_duration_minutes names games "
            f"{', '.join(sorted(configured)) or 'none'}; the games are "
            f"{', '.join(sorted(Game.values))}",
            id="games.E001",
        )
    ]
