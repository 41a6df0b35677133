"""The permission model, in one place: every permission the admin, the ops API, the dashboard and
`/metrics` check, and the two ready groups.

Reads and edits of schedules are Django's model permissions of django-celery-beat's
`PeriodicTask` (a job's offset is part of its schedule and follows them). What is not an edit of
a row gets a named permission, declared in `Meta.permissions` of the model it concerns through
`meta_permissions()` below, so the codename is spelt once. `is_staff` is only the login gate of
the admin and the API; it grants nothing by itself. See docs/security.md.

This module sits below every app (models import it), so it imports nothing of ours at load.
"""

from __future__ import annotations

from typing import Any

# -- Django's model permissions that interfaces check by name ---------------------------------

VIEW_SCHEDULE = "django_celery_beat.view_periodictask"
ADD_SCHEDULE = "django_celery_beat.add_periodictask"
CHANGE_SCHEDULE = "django_celery_beat.change_periodictask"  # edit, enable, disable, toggle
DELETE_SCHEDULE = "django_celery_beat.delete_periodictask"
VIEW_RUN = "scheduler.view_jobrun"
VIEW_INCIDENT = "monitoring.view_incident"
VIEW_AUDIT = "scheduler.view_auditevent"

# -- Named permissions: actions that are not an edit of a row ---------------------------------

RUN_JOB = "scheduler.run_job"
RETRY_RUN = "scheduler.retry_jobrun"
CLOSE_INCIDENT = "monitoring.close_incident"
VIEW_METRICS = "monitoring.view_metrics"  # declared on Incident: how operators learn of trouble
VOID_SESSION = "games.void_gamesession"
REQUEUE_NOTIFICATION = "games.requeue_notification"
HOLD_PAYOUT = "referrals.hold_payout"

NAMED: dict[str, str] = {
    RUN_JOB: "Can run a job now (admin run now, API trigger)",
    RETRY_RUN: "Can retry a failed, lost, missed or expired run",
    CLOSE_INCIDENT: "Can close an alert incident by hand",
    VIEW_METRICS: "Can scrape /metrics",
    VOID_SESSION: "Can void a finished game session",
    REQUEUE_NOTIFICATION: "Can requeue failed notifications",
    HOLD_PAYOUT: "Can hold and release a player's payouts",
}

# The dashboard shows the ledger's statistics and the schedules' forecast.
DASHBOARD = (VIEW_RUN, VIEW_SCHEDULE)


def meta_permissions(*names: str) -> list[tuple[str, str]]:
    """`Meta.permissions` entries (codename, description) for named permissions of one model."""
    return [(name.split(".", 1)[1], NAMED[name]) for name in names]


# -- The two ready groups -----------------------------------------------------------------------

VIEWERS = "jobsite viewers"
OPERATORS = "jobsite operators"

# Viewers hold every view_ permission of these apps (so a model added later is included), plus
# the metrics scrape. Users, groups and API tokens (auth, authtoken) are not among them.
VIEWED_APPS = (
    "django_celery_beat",
    "django_celery_results",
    "scheduler",
    "monitoring",
    "games",
    "referrals",
)
VIEWER_EXTRA = (VIEW_METRICS,)
# Operators: the viewers' permissions and the day-to-day actions. Creating and deleting schedules
# stay with superusers (and `manage.py schedules apply|remove` on the server).
OPERATOR_EXTRA = (
    CHANGE_SCHEDULE,
    RUN_JOB,
    RETRY_RUN,
    CLOSE_INCIDENT,
    VOID_SESSION,
    REQUEUE_NOTIFICATION,
    HOLD_PAYOUT,
)


def jobsite_groups_sync(*, using: str = "default", **_: Any) -> None:
    """Create the two groups and set each one's permissions to exactly the declared list.

    Runs after every `migrate` (a `post_migrate` receiver, see ops.apps), so the groups follow
    the code: a permission added to a role here reaches the group at the next deploy, and a
    permission granted to the group by hand is taken away again (make your own group for
    variations). Idempotent. It creates the permissions it grants first: on a new database
    Django's own receiver may not have reached every app yet.
    """
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission
    from django.db.models import Q

    for label in VIEWED_APPS:
        create_permissions(apps.get_app_config(label), verbosity=0, using=using)

    def named(names: tuple[str, ...]) -> Q:
        query = Q(pk__in=[])
        for name in names:
            app_label, codename = name.split(".", 1)
            query |= Q(content_type__app_label=app_label, codename=codename)
        return query

    permissions = Permission.objects.using(using)
    viewing = list(
        permissions.filter(
            Q(content_type__app_label__in=VIEWED_APPS, codename__startswith="view_")
            | named(VIEWER_EXTRA)
        )
    )
    operating = viewing + list(permissions.filter(named(OPERATOR_EXTRA)))
    for name, granted in ((VIEWERS, viewing), (OPERATORS, operating)):
        group, _created = Group.objects.using(using).get_or_create(name=name)
        group.permissions.set(granted)
