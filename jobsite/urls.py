from django.contrib import admin
from django.urls import include, path

from jobsite.health import healthz
from ops.views import dashboard

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Before admin.site.urls, whose catch-all would answer 404 for it.
    path("admin/jobs-dashboard/", admin.site.admin_view(dashboard), name="ops-dashboard"),
    path("admin/", admin.site.urls),
    path("", include("ops.urls")),
]
