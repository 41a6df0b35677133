from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from jobsite.health import healthz, healthz_beat, healthz_ready, healthz_watchdog
from ops.views import dashboard

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("healthz/ready", healthz_ready, name="healthz-ready"),
    path("healthz/beat", healthz_beat, name="healthz-beat"),
    path("healthz/watchdog", healthz_watchdog, name="healthz-watchdog"),
    # Before admin.site.urls, whose catch-all would answer 404 for it.
    path("admin/jobs-dashboard/", admin.site.admin_view(dashboard), name="ops-dashboard"),
    # Incidents and alert deliveries moved from ops to monitoring (monitoring 0001): their admin
    # pages followed the app label; operators' bookmarks of the old ones still land.
    re_path(
        r"^admin/ops/(?P<page>(?:incident|alertdelivery)/.*)$",
        RedirectView.as_view(url="/admin/monitoring/%(page)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("", include("ops.urls")),
]
