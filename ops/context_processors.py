"""Template context for the admin's header: links, and beat's and the watchdog's state on every
page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from core.permissions import VIEW_RUN


def ops_links(request: HttpRequest) -> dict[str, Any]:
    """Flower's URL; for staff who may see runs, beat's and the watchdog's liveness
    (`beat_header`, `watchdog_header`).

    Each state is one single-row read of the process's heartbeat (monitoring.liveness), made only
    for a staff user with scheduler.view_jobrun, only when the page renders it (the header), and at
    most once per request."""
    context: dict[str, Any] = {"flower_url": getattr(settings, "FLOWER_URL", "")}
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff and user.has_perm(VIEW_RUN):
        context["beat_header"] = _LazyLiveness("beat")
        context["beat_down_after"] = settings.HEALTH_BEAT_DOWN_AFTER
        context["watchdog_header"] = _LazyLiveness("watchdog")
        context["watchdog_down_after"] = settings.HEALTH_WATCHDOG_DOWN_AFTER
    return context


class _LazyLiveness:
    """monitoring.liveness.process_liveness(kind), read the first time the template asks for it."""

    _value: Any = None

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _liveness(self) -> Any:
        if self._value is None:
            from monitoring.liveness import process_liveness

            self._value = process_liveness(self.kind)
        return self._value

    @property
    def state(self) -> str:
        return self._liveness().state

    @property
    def seconds_ago(self) -> int | None:
        age = self._liveness().age
        return None if age is None else max(0, int(age.total_seconds()))

    @property
    def label(self) -> str:
        process = self._liveness()
        if process.age is None:
            return f"{self.kind} down: never seen"
        word = {"ok": "up", "stale": "late"}.get(process.state, "down")
        return f"{self.kind} {word}, last seen {self.seconds_ago} s ago"
