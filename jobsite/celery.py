"""The Celery application: configured from Django settings (CELERY_*), tasks found in the apps."""

import os

from celery import Celery

from jobsite import redaction  # noqa: F401  (connects the publish signal)
from jobsite.env import install_config_error_hook

install_config_error_hook()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")

app = Celery("jobsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
