"""The admin app with jobsite's default site (Django's documented way to replace `admin.site`).

A module of its own: INSTALLED_APPS imports it before the app registry is ready, so it must not
import models or the admin's ModelAdmin machinery.
https://docs.djangoproject.com/en/5.2/ref/contrib/admin/#overriding-the-default-admin-site
"""

from django.contrib.admin.apps import AdminConfig


class JobsiteAdminConfig(AdminConfig):
    default_site = "core.admin.JobsiteAdminSite"

    def ready(self) -> None:
        super().ready()  # autodiscovers every app's admin, axes' included
        from django.apps import apps

        if apps.is_installed("axes"):
            from axes.admin import AccessAttemptAdmin

            # django-axes' action deletes rows but declares no permission, so Django would offer
            # it to anyone who may view the attempts: it needs the delete permission.
            AccessAttemptAdmin.cleanup_expired_attempts.allowed_permissions = ("delete",)
