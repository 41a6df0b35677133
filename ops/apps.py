from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operators' surface: admin for the scheduler, dashboard, audit trail, ops API, metrics,
    alerts."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from core.permissions import jobsite_groups_sync

        # The two ready groups follow the code after every migrate; a data migration would run
        # once, before Django's own receiver has created the permissions it must grant, and a
        # test database's flush would leave no groups behind (see core.permissions).
        post_migrate.connect(jobsite_groups_sync, sender=self, dispatch_uid="ops.groups")
