from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operators' surface, interfaces only: the admin (the scheduler's and monitoring's models),
    dashboard, job page, ops API, charts, metrics and health views. It defines no models."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.apps import apps
        from django.db.models.signals import post_migrate

        from core.permissions import jobsite_groups_sync

        # The two ready groups follow the code after every migrate; a data migration would run
        # once, before Django's own receiver has created the permissions it must grant, and a
        # test database's flush would leave no groups behind (see core.permissions). Django sends
        # post_migrate only for apps with a models module, which ops no longer has: the sender
        # is monitoring, whose Incident declares two of the named permissions the groups grant
        # (the sync creates every app's permissions itself, so the sender's order is no matter).
        post_migrate.connect(
            jobsite_groups_sync,
            sender=apps.get_app_config("monitoring"),
            dispatch_uid="ops.groups",
        )
