"""Pages of the API's lists (`?limit=&offset=`), so a list costs one page, not every row.

Strict: a limit or offset that is not an integer in range is a 400 naming the parameter, never
silently replaced (DRF's own LimitOffsetPagination falls back to its default).
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

MAX_OFFSET = 1_000_000


class ListPage(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_limit(self, request: Request) -> int:
        return _bounded(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request: Request) -> int:
        return _bounded(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: (1, self.max_limit, self.default_limit),
            self.offset_query_param: (0, MAX_OFFSET, 0),
        }
        for parameter in parameters:
            low, high, default = bounds[parameter["name"]]
            parameter["schema"] |= {"minimum": low, "maximum": high, "default": default}
        return parameters


def _bounded(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationError({name: [f"must be an integer from {low} to {high}"]})
    return int(raw)


def paginate(view: APIView, request: Request, items: Any, render: Any) -> Response:
    """One page of `items` (a queryset or list) as {count, next, previous, results}; `render`
    turns the page's items into the results."""
    paginator = view.pagination_class()  # type: ignore[attr-defined]
    page = paginator.paginate_queryset(items, request, view=view)
    return paginator.get_paginated_response(render(page))
