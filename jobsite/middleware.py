"""Requests refused before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

NUL_REFUSED = "The address contains a NUL character."


def refuse_nul_in_url(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """A NUL byte in the path or query string is a 400.

    PostgreSQL text cannot hold NUL, so `/api/schedules/%00/` or an admin filter `?job=%00` would
    reach the database and fail there with a 500. Forms and serializers already refuse NUL in
    bodies (Django's and DRF's ProhibitNullCharactersValidator); this covers the URL. Under /api/
    the refusal is the API's own 400 body (ops/api/exceptions.py), naming `path` or the parameter.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        query = request.GET
        refused = ["path"] if "\x00" in request.path else []
        refused += [
            key
            for key in query
            if "\x00" in key or any("\x00" in value for value in query.getlist(key))
        ]
        if not refused:
            return get_response(request)
        if request.path.startswith("/api/"):
            return JsonResponse({name: [NUL_REFUSED] for name in refused}, status=400)
        return HttpResponseBadRequest(NUL_REFUSED, content_type="text/plain; charset=utf-8")

    return middleware
