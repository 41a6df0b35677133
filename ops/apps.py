from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operators' surface: admin for the scheduler, dashboard, audit trail, ops API, metrics."""

    name = "ops"
    verbose_name = "Operations"
