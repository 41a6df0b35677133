from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """The monitoring domain: alert incidents and their notifications, outage detection and the
    watchdog pass (`manage.py watchdog`). Its admin, API, dashboard and metrics are ops'."""

    name = "monitoring"
    verbose_name = "Monitoring"
