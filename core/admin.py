"""Admin building blocks shared by the apps, and the admin site every app registers with."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


class BadLookup(Exception):
    """A filter in the change list's address that cannot be applied."""


class StrictChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> Any:
        try:
            return super().get_queryset(request, exclude_parameters)
        # Django wraps most bad filters in IncorrectLookupParameters, but its date hierarchy lets
        # OverflowError (`?slot__year=99999999999`) and ValueError (`?slot__year=9999`) escape.
        except (IncorrectLookupParameters, OverflowError, ValueError) as exc:
            raise BadLookup(str(exc) or exc.__class__.__name__) from exc


class StrictLookupsMixin:
    """A bad filter in the address is the caller's error: 400 naming it, never a 500.

    Django's own answer to most bad filters, a redirect to `?e=1`, then shows the unfiltered list
    as if the filter had applied; a 400 says what was wrong instead.
    """

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return StrictChangeList

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().changelist_view(request, extra_context)  # type: ignore[misc]
        except BadLookup as exc:
            return HttpResponseBadRequest(
                f"Invalid filter in the address: {exc}", content_type="text/plain; charset=utf-8"
            )


class JobsiteAdminSite(admin.AdminSite):
    """The default admin site (`jobsite.admin_config`): every ModelAdmin registered with it, ours
    and third-party ones (django-celery-results, django-axes...), refuses bad filters with 400."""

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, StrictLookupsMixin):
            admin_class = type(admin_class.__name__, (StrictLookupsMixin, admin_class), {})
        super().register(model_or_iterable, admin_class, **options)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted from the admin: services own these rows."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
