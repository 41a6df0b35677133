"""`/healthz` for load balancers: database, broker and beat liveness; no secrets in the answer.

Beat liveness is derived from what beat writes to the database (see ops.health). It makes the
answer 503 only when HEALTH_BEAT_REQUIRED is on (the default); otherwise it is reported only, for
load balancers that should keep web servers in rotation whatever beat does.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


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
    from ops.health import beat_liveness

    liveness = beat_liveness()
    return "ok" if liveness.healthy else liveness.describe()


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, probe in (("database", _database), ("broker", _broker), ("beat", _beat)):
        try:
            checks[name] = probe()
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
    required = ["database", "broker"] + (["beat"] if settings.HEALTH_BEAT_REQUIRED else [])
    healthy = all(checks[name] == "ok" for name in required)
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
