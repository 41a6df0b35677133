"""URLs of the ops API (under /api/) and /metrics."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from ops.api import views

urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/jobs/", views.JobListView.as_view(), name="api-jobs"),
    path("api/jobs/history", views.JobHistoryView.as_view(), name="api-job-history"),
    path("api/jobs/<str:name>/trigger", views.JobTriggerView.as_view(), name="api-job-trigger"),
    path("api/schedules/", views.ScheduleListView.as_view(), name="api-schedules"),
    path("api/schedules/<str:name>/", views.ScheduleDetailView.as_view(), name="api-schedule"),
    path(
        "api/schedules/<str:name>/toggle",
        views.ScheduleToggleView.as_view(),
        name="api-schedule-toggle",
    ),
    path("api/executions/retry", views.RetryView.as_view(), name="api-executions-retry"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
]
