"""The API's refusals and their two body shapes, which the OpenAPI schema documents for every
endpoint (ops.api.schema):

- `FieldErrors` — `{"<field>": ["reason", ...]}`: 400 (a body field, a query parameter, `body` for
  the body as a whole, `non_field_errors`), 409 (a create that conflicts, naming the field) and
  413 (`body` over DATA_UPLOAD_MAX_MEMORY_SIZE). Items of a list report by index:
  `{"ids": {"0": ["..."]}}`.
- `Error` — `{"detail": "reason"}`: 401, 403, 404, 405 and 415, DRF's own.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler


class PayloadTooLarge(APIException):
    """413 naming `body`, JSON like every other refusal (not Django's HTML error page)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"

    def __init__(self, limit: int) -> None:
        super().__init__({"body": [f"larger than {limit} bytes"]})


class Conflict(APIException):
    """409: the request is well formed but conflicts with what exists (names its field)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"

    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: [message]})


class StoredScheduleBroken(APIException):
    """400 naming `schedule`: the row as stored cannot be saved again (written around every form,
    e.g. bad kwargs JSON straight into the database), so a change to it is refused, not a 500."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, problems: list[str]) -> None:
        why = "; ".join(problems)
        super().__init__(
            {
                "schedule": [
                    f"the stored schedule is broken ({why}): fix it in the "
                    "admin or delete it, then try again"
                ]
            }
        )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    elif isinstance(exc, DjangoValidationError):
        # Raised by the schedule's pre_save validation (scheduler.signals) inside a service's
        # transaction, which rolled back: nothing was written.
        exc = StoredScheduleBroken(exc.messages)
    return exception_handler(exc, context)


class ErrorSerializer(serializers.Serializer):
    """`{"detail": "..."}`: DRF's body for 401, 403, 404, 405 and 415."""

    detail = serializers.CharField()


class FieldErrorsSerializer(serializers.Serializer):
    """`{"<field>": ["reason", ...]}`: the body of 400, 409 and 413 (schema: FieldErrorsSchema)."""


class FieldErrorsSchema(OpenApiSerializerExtension):
    """A map from field to reasons has no fixed properties: describe it by hand."""

    target_class = FieldErrorsSerializer

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        reasons = {"type": "array", "items": {"type": "string"}}
        return {
            "type": "object",
            "description": "Each key names what was refused: a body field, a query parameter, "
            "`body` for the body as a whole, or `non_field_errors`; its value lists the reasons. "
            'Items of a list report by index, e.g. `{"ids": {"0": ["..."]}}`.',
            "minProperties": 1,
            "additionalProperties": {
                "oneOf": [reasons, {"type": "object", "additionalProperties": reasons}]
            },
        }
