"""The OpenAPI schema's AutoSchema: every operation documents its refusals, not only success.

One owner for the rule "which errors can this endpoint answer", read off the operation itself, so
a new view gets them without repeating a dict:

- 401 (no or a bad token; with `WWW-Authenticate`) and 403 (not staff, or lacking the method's
  permission) everywhere: every view declares its permissions (ops.api.permissions).
- 400 naming the field wherever there is input to refuse: query parameters, a body, or a write
  (writes refuse any query parameter they do not take).
- 404 where the path names a job or schedule.
- 413 (body over DATA_UPLOAD_MAX_MEMORY_SIZE) and 415 (not JSON) where a body is read.

A view adds what only it can answer (409 on a create that conflicts) with `extend_schema`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema

from ops.api.exceptions import ErrorSerializer, FieldErrorsSerializer

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class OpsAutoSchema(AutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        error = self.resolve_serializer(ErrorSerializer, "response").ref
        field_errors = self.resolve_serializer(FieldErrorsSerializer, "response").ref
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        errors: dict[str, tuple[dict[str, Any], str]] = {
            "401": (error, "No credentials, or a token that does not exist."),
            "403": (error, "Not active staff, or lacking this method's permission."),
        }
        if has_body or self.method in WRITES or any(p["in"] == "query" for p in parameters):
            errors["400"] = (field_errors, "Refused input; each key names the field.")
        if any(p["in"] == "path" for p in parameters):
            errors["404"] = (error, "No such job or schedule.")
        if has_body:
            errors["413"] = (field_errors, "Body over the upload limit; names `body`.")
            errors["415"] = (error, "Content-Type is not application/json.")
        responses = operation["responses"]
        for code, (schema, description) in errors.items():
            responses.setdefault(
                code, {"content": {"application/json": {"schema": schema}}, "description": ""}
            )
            responses[code]["description"] = responses[code]["description"] or description
        responses["401"].setdefault(
            "headers",
            {
                "WWW-Authenticate": {
                    "schema": {"type": "string"},
                    "required": True,
                    "description": "`Token` (token authentication is the first scheme).",
                }
            },
        )
        operation["responses"] = dict(sorted(responses.items()))
        return operation
