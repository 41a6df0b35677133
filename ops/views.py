"""The jobs dashboard (an admin page): statistics per job over a chosen window and three charts.

Everything is computed by `scheduler.selectors` and drawn as inline SVG by `ops.charts`; the page
makes no request to anything but this server.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from core.permissions import DASHBOARD, VIEW_INCIDENT
from monitoring.alerts import open_incidents
from monitoring.liveness import beat_liveness, beat_processes, watchdog_liveness, watchdog_processes
from ops import charts
from scheduler.selectors import concurrency_series, forecast, jobs_overview, starts_per_second

WINDOWS = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
DEFAULT_WINDOW = "24h"


def dashboard(request: HttpRequest) -> TemplateResponse:
    """Staff (admin_view) with view permission on runs and schedules; else 403."""
    if not request.user.has_perms(DASHBOARD):
        raise PermissionDenied
    key = request.GET.get("window", DEFAULT_WINDOW)
    if key not in WINDOWS:
        key = DEFAULT_WINDOW
    window = WINDOWS[key]
    now = timezone.now()
    since = now - window
    jobs = jobs_overview(now=now, window=window)
    per_second = starts_per_second(since=since, until=now)
    running = concurrency_series(since=since, until=now, buckets=96)
    ahead = forecast(now=now, hours=24)
    # With the stagger working no second holds more starts than its busiest single job would.
    busiest_job_runs = max((view.stats.runs for view in jobs), default=0)
    tick = "%H:%M" if window <= timedelta(days=1) else "%a %H:%M"
    context = {
        **admin.site.each_context(request),
        "title": "Jobs dashboard",
        "windows": list(WINDOWS),
        "window": key,
        "since": since,
        "now": now,
        "jobs": jobs,
        "open_incidents": open_incidents() if request.user.has_perm(VIEW_INCIDENT) else None,
        "beat": beat_liveness(),
        "beats": beat_processes(),
        "watchdog": watchdog_liveness(),
        "watchdogs": watchdog_processes(),
        "watchdog_down_after": settings.HEALTH_WATCHDOG_DOWN_AFTER,
        "starts_chart": charts.bar_chart(
            per_second,
            [f":{s:02d}" for s in range(60)],
            name="starts-per-second",
            title="Runs started in each second of the minute",
            highlight_over=busiest_job_runs or None,
        ),
        "concurrency_chart": charts.step_chart(
            [(f"{moment:{tick}}", value) for moment, value in running],
            name="concurrency",
            title="Most runs executing at once",
        ),
        "forecast_chart": charts.bar_chart(
            ahead.per_hour,
            [f"{(now + timedelta(hours=h)):%H}:00" for h in range(ahead.hours)],
            name="forecast",
            title="Starts per hour, next 24 hours",
            tick_every=3,
        ),
        "forecast": ahead,
        "forecast_next": ahead.next_starts,
        "total_starts": sum(per_second),
    }
    return TemplateResponse(request, "admin/ops/dashboard.html", context)
