"""The ops API's permission classes: each view names, per HTTP method, the permissions a caller
needs (core.permissions). Active staff is the login gate; the permissions decide.

Anonymous callers get 401 (DRF turns a refusal into 401 when no credentials came), authenticated
callers who are not staff or lack a permission 403. A refusal happens in `APIView.initial`,
before the handler reads the body or looks anything up, so it writes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.permissions import BasePermission

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings: no cycle
    from rest_framework.request import Request
    from rest_framework.views import APIView

# A description of the endpoint (DRF's metadata): its shape, no data.
STAFF_ONLY_METHODS = frozenset({"OPTIONS"})


def _is_staff(request: Request) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class DenyUndeclared(BasePermission):
    """The default (REST_FRAMEWORK): a view that does not declare its permissions serves no one."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return False


class StaffWith(BasePermission):
    """Active staff holding every permission listed for the request's method.

    HEAD needs what GET needs. A method that has a handler but no entry is refused (fail
    closed); one without a handler is let through to the view's 405, which runs nothing.
    """

    required: dict[str, tuple[str, ...]] = {}

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not _is_staff(request):
            return False
        method = request.method or ""
        if method in STAFF_ONLY_METHODS:
            return True
        needed = self.required.get("GET" if method == "HEAD" else method)
        if needed is None:
            return not hasattr(view, method.lower())
        return request.user.has_perms(needed)


def staff_with(**required: tuple[str, ...] | str) -> type[StaffWith]:
    """`permission_classes = [staff_with(GET=VIEW_SCHEDULE, PATCH=CHANGE_SCHEDULE)]`."""
    by_method = {
        method.upper(): (needed,) if isinstance(needed, str) else tuple(needed)
        for method, needed in required.items()
    }
    name = "StaffWith(" + ", ".join(f"{m}={'+'.join(p)}" for m, p in by_method.items()) + ")"
    attrs: dict[str, Any] = {"required": by_method, "__module__": __name__}
    return type(name, (StaffWith,), attrs)
