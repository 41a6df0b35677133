"""Template filters for moments to the second (ops.timefmt): `{{ run.slot|at_second }}`,
`{{ start|at_second:now }}` (time only when it is today), `{{ run.started_at|ago:now }}`."""

from __future__ import annotations

from datetime import datetime

from django import template

from ops import timefmt

register = template.Library()


@register.filter
def at_second(moment: datetime | None, now: datetime | None = None) -> str:
    return timefmt.at_second(moment, now=now)


@register.filter
def ago(moment: datetime | None, now: datetime) -> str:
    return timefmt.ago(moment, now=now)
