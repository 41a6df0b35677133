"""Requests refused before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


def refuse_nul_in_url(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """A NUL byte in the path or query string is a 400.

    PostgreSQL text cannot hold NUL, so `/api/schedules/%00/` or an admin filter `?job=%00` would
    reach the database and fail there with a 500. Forms and serializers already refuse NUL in
    bodies (Django's and DRF's ProhibitNullCharactersValidator); this covers the URL.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        query = request.GET
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in value for value in query.getlist(key)) for key in query
        ):
            return HttpResponseBadRequest(
                "The address contains a NUL character.", content_type="text/plain; charset=utf-8"
            )
        return get_response(request)

    return middleware
