"""Template context for the admin's header: links, and beat's state on every page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from core.permissions import VIEW_RUN


def ops_links(request: HttpRequest) -> dict[str, Any]:
    """Flower's URL; for staff who may see runs, beat's liveness (`beat_header`).

    Beat's state is one single-row read of its heartbeat (ops.health.beat_liveness), made only
    for a staff user with scheduler.view_jobrun, only when the page renders it (the header), and
    at most once per request."""
    context: dict[str, Any] = {"flower_url": getattr(settings, "FLOWER_URL", "")}
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff and user.has_perm(VIEW_RUN):
        context["beat_header"] = _LazyBeat()
        context["beat_down_after"] = settings.HEALTH_BEAT_DOWN_AFTER
    return context


class _LazyBeat:
    """ops.health.beat_liveness(), read the first time the template asks for it."""

    _value: Any = None

    def _liveness(self) -> Any:
        if self._value is None:
            from ops.health import beat_liveness

            self._value = beat_liveness()
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
        beat = self._liveness()
        if beat.age is None:
            return "beat down: never seen"
        seconds = self.seconds_ago
        if beat.state == "ok":
            return f"beat up, last seen {seconds} s ago"
        if beat.state == "stale":
            return f"beat late, last seen {seconds} s ago"
        return f"beat down, last seen {seconds} s ago"
