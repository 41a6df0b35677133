"""Template context for the admin's header links."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def ops_links(request: HttpRequest) -> dict[str, str]:
    return {"flower_url": getattr(settings, "FLOWER_URL", "")}
