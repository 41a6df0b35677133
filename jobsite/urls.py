from django.contrib import admin
from django.urls import include, path

from jobsite.health import healthz, healthz_beat, healthz_ready, healthz_watchdog
from ops.views import dashboard

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("healthz/ready", healthz_ready, name="healthz-ready"),
    path("healthz/beat", healthz_beat, name="healthz-beat"),
    path("healthz/watchdog", healthz_watchdog, name="healthz-watchdog"),
    # Before admin.site.urls, whose catch-all would answer 404 for it.
    path("admin/jobs-dashboard/", admin.site.admin_view(dashboard), name="ops-dashboard"),
    path("admin/", admin.site.urls),
    path("", include("ops.urls")),
]
