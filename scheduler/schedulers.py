"""Beat's scheduler: django-celery-beat's DatabaseScheduler, extended at its seams."""

from django_celery_beat.schedulers import DatabaseScheduler


class JobScheduler(DatabaseScheduler):
    pass
