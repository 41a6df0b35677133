from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operators' surface: admin for the scheduler, dashboard, audit trail, ops API, metrics,
    alerts."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from ops import checks  # noqa: F401
        from ops.alerts import alerts_after_reconcile
        from scheduler.signals import ledger_reconciled

        # Beat evaluates alerts right after each reconciler pass (see ops.alerts).
        ledger_reconciled.connect(alerts_after_reconcile, dispatch_uid="ops.alerts")
