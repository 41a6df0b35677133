"""System check: alert settings from the environment are valid (the message names the
variable), so a typo stops `manage.py check` instead of beat logging it every 30 s."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register

from jobsite.env import ConfigError


@register()
def ops_alert_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from ops import conf

    try:
        conf.load()
    except ConfigError as exc:
        return [Error(str(exc), id="ops.E001")]
    return []
