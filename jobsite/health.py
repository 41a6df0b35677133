"""Health endpoints, anonymous and cheap (a few single-row reads, no cache): status words only.

- `/healthz/ready`: the load balancer's check. PostgreSQL and the broker; 503 when either is down.
  Beat plays no part, so a dead beat never takes the admin out of rotation.
- `/healthz/beat`: beat's heartbeat (monitoring.liveness): `ok` or `stale` answer 200, `down` 503.
- `/healthz/watchdog`: the watchdog's heartbeat (stamped every pass), the same words and codes.
  The watchdog judges beat; this endpoint (and `jobsite_watchdog_up`) is how the watchdog is
  judged, by something other than itself.
- `/healthz`: kept for existing probes: the ready check, with beat's and the watchdog's words
  reported beside it; beat makes it 503 only when HEALTH_BEAT_REQUIRED=1, the watchdog never
  (a dead watchdog must not take the web process out of rotation).

Anonymous callers see `ok`, `stale` or `down`, never times, hosts or exception texts; staff see
beat's details on the jobs dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _broker() -> str:
    from jobsite.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


def _beat() -> str:
    from monitoring.liveness import beat_liveness

    return beat_liveness().state


def _watchdog() -> str:
    from monitoring.liveness import watchdog_liveness

    return watchdog_liveness().state


def _probe(check: Callable[[], str]) -> str:
    try:
        return check()
    except Exception as exc:
        # What failed goes to the server's log, not into an anonymous answer.
        logger.warning("health check %s is down: %s: %s", check.__name__, type(exc).__name__, exc)
        return "down"


def _answer(checks: dict[str, str], required: list[str]) -> JsonResponse:
    healthy = all(checks[name] in ("ok", "stale") for name in required)
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


@never_cache
@require_GET
def healthz_ready(request: HttpRequest) -> JsonResponse:
    checks = {"database": _probe(_database), "broker": _probe(_broker)}
    return _answer(checks, ["database", "broker"])


@never_cache
@require_GET
def healthz_beat(request: HttpRequest) -> JsonResponse:
    return _answer({"beat": _probe(_beat)}, ["beat"])


@never_cache
@require_GET
def healthz_watchdog(request: HttpRequest) -> JsonResponse:
    return _answer({"watchdog": _probe(_watchdog)}, ["watchdog"])


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {
        "database": _probe(_database),
        "broker": _probe(_broker),
        "beat": _probe(_beat),
        "watchdog": _probe(_watchdog),
    }
    required = ["database", "broker"] + (["beat"] if settings.HEALTH_BEAT_REQUIRED else [])
    return _answer(checks, required)
