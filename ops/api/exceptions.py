"""DRF exception handler: a body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 400 naming `body` (JSON,
like every other refusal) instead of Django's HTML error page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        exc = ParseError({"body": [f"larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"]})
    return exception_handler(exc, context)
