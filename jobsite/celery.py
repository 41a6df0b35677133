"""The Celery application: configured from Django settings (CELERY_*), tasks found in the apps."""

import os

from celery import Celery

from core.env import install_config_error_hook
from jobsite import redaction  # noqa: F401  (connects the publish signal)

install_config_error_hook()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")

app = Celery("jobsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _django_setup(**_: object) -> None:
    """Set Django up as soon as Celery has read its configuration.

    The worker and beat do it through Celery's Django fixup, but commands such as `celery -A
    jobsite call` or `purge` reach for the result backend first, and django-celery-results'
    backend imports its models: AppRegistryNotReady. Inside Django (manage.py, gunicorn) the apps
    are loading or loaded already and nothing is done here.
    """
    from django.apps import apps

    if not apps.ready and not apps.loading:
        import django

        django.setup()
