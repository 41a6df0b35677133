"""System check: games settings from the environment are valid (the message names the variable)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register

from jobsite.env import ConfigError


@register()
def games_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from games import conf

    try:
        conf.load()
    except ConfigError as exc:
        return [Error(str(exc), id="games.E001")]
    return []
