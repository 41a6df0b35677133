"""The role matrix: who may do what, in the API, the admin's actions, buttons and custom views,
the dashboard and /metrics (core.permissions, docs/security.md).

Each table row names a request and the status each role gets, in the order of ROLES. A refused
request must leave everything as it was; an allowed write must change something.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import URLPattern, reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.authtoken.models import Token
from rest_framework.views import APIView

from core import permissions as perms
from games.models import GameSession, Notification
from games.services import game_session_finish, game_session_start, player_create
from monitoring.models import Incident
from ops.api.permissions import StaffWith
from ops.urls import urlpatterns as ops_urls
from referrals.models import PayoutHold
from referrals.services import payout_hold
from scheduler.models import AuditEvent, JobRun, JobSchedule
from tests.ops.conftest import applied_schedules, make_run
from tests.ops.test_admin import _form_data

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "non-staff", "staff", "viewer", "operator", "superuser")


def expected(statuses: str) -> dict[str, int]:
    codes = [int(code) for code in statuses.split()]
    assert len(codes) == len(ROLES)
    return dict(zip(ROLES, codes, strict=True))


@dataclass
class World:
    schedule: PeriodicTask  # enabled
    disabled: PeriodicTask
    failed: JobRun
    incident: Incident
    session: GameSession  # finished, not voided
    notification: Notification  # failed
    player: Any  # payouts not held
    held_player: Any
    hold: PayoutHold


@pytest.fixture
def world(_world: World) -> World:
    return copy.deepcopy(_world)


@pytest.fixture(scope="module")
def _world(module_db: bool) -> World:
    """Made once per module and worker (~0.2 s, most of it `schedules apply`): the matrix's
    ~220 tests each roll back to it."""
    assert module_db, "a transaction=True test here would make the world per test"
    schedules = applied_schedules()
    now = timezone.now()
    disabled = schedules["retention-pruning"]
    PeriodicTask.objects.filter(pk=disabled.pk).update(enabled=False)
    failed = make_run("live-stats-sync", now - timedelta(minutes=3), "failed", error="boom")
    incident = Incident.objects.create(
        job=failed.job,
        kind="failures",
        opened_at=failed.finished_at,
        first_run_id=failed.pk,
        first_slot=failed.slot,
        last_run_id=failed.pk,
        last_slot=failed.slot,
        summary="live-stats-sync failed 3 times in a row",
    )
    player = player_create(handle="ada", wallet_address="0xabc")
    started = game_session_start(
        player_id=player.pk, game="snake", entry_fee="1.00", now=now - timedelta(minutes=5)
    )
    session = game_session_finish(session_id=started.pk, score=7, now=now)
    notification = Notification.objects.create(
        player=player,
        kind="test",
        title="hello",
        status=Notification.Status.FAILED,
        due_at=now,
        next_attempt_at=now,
        attempts=5,
        created_at=now,
    )
    held_player = player_create(handle="bob", wallet_address="0xdef")
    hold = payout_hold(player_id=held_player.pk, reason="fraud check")
    return World(
        schedule=schedules["cleanup"],
        disabled=disabled,
        failed=failed,
        incident=incident,
        session=session,
        notification=notification,
        player=player,
        held_player=held_player,
        hold=hold,
    )


def snapshot() -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    return {
        "schedules": list(PeriodicTask.objects.order_by("pk").values()),
        "offsets": list(JobSchedule.objects.order_by("pk").values()),
        "runs": list(JobRun.objects.order_by("pk").values_list("pk", "status")),
        "audit": AuditEvent.objects.count(),
        "admin log": LogEntry.objects.count(),
        "open incidents": list(Incident.objects.filter(resolved_at=None).values_list("pk")),
        "voided": list(GameSession.objects.exclude(voided_at=None).values_list("pk")),
        "notifications": list(Notification.objects.order_by("pk").values_list("pk", "status")),
        "holds": list(PayoutHold.objects.order_by("pk").values_list("pk", "released_at")),
    }


@pytest.fixture
def user_for(django_user_model) -> Callable[[str], Any]:
    def make(role: str) -> Any:
        if role == "anonymous":
            return None
        user = django_user_model.objects.create_user(
            role, is_staff=role != "non-staff", is_superuser=role == "superuser"
        )
        if role in ("viewer", "operator", "non-staff"):
            # The non-staff user is an operator too: is_staff is the gate, whatever the groups.
            group = perms.VIEWERS if role == "viewer" else perms.OPERATORS
            user.groups.add(Group.objects.get(name=group))
        return user

    return make


# ---------------------------------------------------------------------------------------------
# The API and /metrics
# ---------------------------------------------------------------------------------------------


def _drop_cleanup(world: World) -> None:
    PeriodicTask.objects.filter(pk=world.schedule.pk).delete()


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    statuses: str  # one per role, in the order of ROLES
    body: Callable[[World], Any] | None = None
    prepare: Callable[[World], None] | None = None

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.url}"


CREATE = {"job": "cleanup", "cron": "0 3 * * *", "offset": 35}
# fmt: off
API = [
    # statuses of: anonymous, non-staff, staff, viewer, operator, superuser
    Call("get",    "/api/jobs/",                         "401 403 403 200 200 200"),
    Call("post",   "/api/jobs/cleanup/trigger",          "401 403 403 403 202 202", lambda w: {}),
    Call("get",    "/api/jobs/history",                  "401 403 403 200 200 200"),
    Call("get",    "/api/schedules/",                    "401 403 403 200 200 200"),
    Call("options", "/api/schedules/",                   "401 403 200 200 200 200"),
    Call("post",   "/api/schedules/",                    "401 403 403 403 403 201",
         lambda w: CREATE, prepare=_drop_cleanup),
    Call("get",    "/api/schedules/cleanup/",            "401 403 403 200 200 200"),
    Call("head",   "/api/schedules/cleanup/",            "401 403 403 200 200 200"),
    Call("patch",  "/api/schedules/cleanup/",            "401 403 403 403 200 200",
         lambda w: {"enabled": False}),
    Call("put",    "/api/schedules/cleanup/",            "401 403 403 403 200 200",
         lambda w: {"enabled": False}),
    Call("delete", "/api/schedules/cleanup/",            "401 403 403 403 403 204"),
    Call("post",   "/api/schedules/cleanup/toggle",      "401 403 403 403 200 200", lambda w: {}),
    Call("post",   "/api/executions/retry",              "401 403 403 403 200 200",
         lambda w: {"ids": [w.failed.pk]}),
    Call("get",    "/metrics",                           "401 403 403 200 200 200"),
    Call("get",    "/api/schema/",                       "401 403 200 200 200 200"),
]
# fmt: on


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("call", API, ids=str)
def test_the_api_answers_each_role_as_the_matrix_says(world, user_for, call: Call, role: str):
    if call.prepare:
        call.prepare(world)
    user = user_for(role)
    client = Client()
    if user is not None:
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.create(user=user).key}"
    before = snapshot()

    if call.body is None:
        response = getattr(client, call.method)(call.url)
    else:
        body = json.dumps(call.body(world))
        response = getattr(client, call.method)(call.url, body, content_type="application/json")

    assert response.status_code == expected(call.statuses)[role], response.content[:300]
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Token")
    if response.status_code >= 400 or call.method in ("get", "head", "options"):
        assert snapshot() == before
    else:
        assert snapshot() != before


def test_every_api_endpoint_declares_its_permissions():
    # A view that forgets is refused to everyone (DenyUndeclared), so this names it at once.
    views = [
        p.callback.view_class
        for p in ops_urls
        if isinstance(p, URLPattern) and hasattr(p.callback, "view_class")
    ]
    ours = [v for v in views if v.__module__ == "ops.api.views"]
    assert ours
    for view in ours:
        assert issubclass(view, APIView)
        assert any(issubclass(p, StaffWith) for p in view.permission_classes), view.__name__


# ---------------------------------------------------------------------------------------------
# Admin actions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    model: str  # app_label.model_name
    action: str
    target: str  # the World attribute whose row is selected
    statuses: str
    extra: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.model}:{self.action}"


BEAT = "django_celery_beat.periodictask"
PLAYERS = "referrals.referralplayer"
# Viewers see the list without the action (200: the form is not offered, nothing runs); an
# operator asking for an action only superusers have is sent back with "No action selected".
# fmt: off
ACTIONS = [
    # statuses of: anonymous, non-staff, staff, viewer, operator, superuser
    Action(BEAT, "enable_tasks", "disabled",                "302 302 403 200 302 302"),
    Action(BEAT, "disable_tasks", "schedule",               "302 302 403 200 302 302"),
    Action(BEAT, "toggle_tasks", "schedule",                "302 302 403 200 302 302"),
    Action(BEAT, "run_now", "schedule",                     "302 302 403 200 302 302"),
    Action(BEAT, "delete_selected", "schedule",             "302 302 403 200 302 302",
           {"post": "yes"}),
    Action("scheduler.jobrun", "retry_runs", "failed",      "302 302 403 200 302 302"),
    Action("monitoring.incident", "close_incidents", "incident", "302 302 403 200 302 302"),
    Action("games.gamesession", "void_sessions", "session", "302 302 403 200 302 302"),
    Action("games.notification", "requeue", "notification", "302 302 403 200 302 302"),
    Action(PLAYERS, "hold_payouts", "player",               "302 302 403 200 302 302"),
    Action(PLAYERS, "release_payouts", "held_player",       "302 302 403 200 302 302"),
    Action("referrals.payouthold", "release", "hold",       "302 302 403 200 302 302"),
]
# fmt: on
# Who may actually run each action (a 302 is also the answer to a refused choice).
ACTION_ALLOWED = {
    "delete_selected": {"superuser"},
}


def _admin_client(user: Any) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", ACTIONS, ids=str)
def test_admin_actions_run_only_for_the_roles_that_hold_their_permission(
    world, user_for, case: Action, role: str
):
    client = _admin_client(user_for(role))
    url = reverse("admin:{}_{}_changelist".format(*case.model.split(".")))
    selected = getattr(world, case.target).pk
    before = snapshot()

    response = client.post(
        url, {"action": case.action, "_selected_action": [selected], **case.extra}
    )

    assert response.status_code == expected(case.statuses)[role]
    if role in ACTION_ALLOWED.get(case.action, {"operator", "superuser"}):
        assert snapshot() != before
    else:
        assert snapshot() == before


def test_every_admin_action_declares_its_permissions():
    # Django offers an action without `permissions` to anyone who may view the list.
    for model, model_admin in admin.site._registry.items():
        request_free = model_admin._get_base_actions()
        for func, name, _description in request_free:
            declared = getattr(func, "allowed_permissions", ())
            assert declared, f"{model._meta.label} action {name} declares no permission"


@pytest.mark.parametrize(
    ("role", "offered"),
    [
        ("viewer", set()),
        ("operator", {"enable_tasks", "disable_tasks", "toggle_tasks", "run_now"}),
        (
            "superuser",
            {"enable_tasks", "disable_tasks", "toggle_tasks", "run_now", "delete_selected"},
        ),
    ],
)
def test_the_schedule_list_offers_only_the_actions_a_role_may_run(world, user_for, role, offered):
    response = _admin_client(user_for(role)).get(
        reverse("admin:django_celery_beat_periodictask_changelist")
    )
    form = response.context["action_form"]  # None when no action is offered
    choices = {name for name, _label in form.fields["action"].choices if name} if form else set()
    assert choices == offered


# ---------------------------------------------------------------------------------------------
# Admin buttons, custom views and the dashboard
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    method: str
    url: Callable[[World], str]
    statuses: str
    data: Callable[[World], dict[str, Any]] | None = None

    def __str__(self) -> str:
        return self.name


def _schedule_change(w: World) -> str:
    return reverse("admin:django_celery_beat_periodictask_change", args=[w.schedule.pk])


# fmt: off
PAGES = [
    # statuses of: anonymous, non-staff, staff, viewer, operator, superuser
    Page("run-now view", "post", lambda w: reverse(
        "admin:django_celery_beat_periodictask_run_now", args=[w.schedule.pk]),
        "302 302 403 403 302 302"),
    Page("retry view", "post", lambda w: reverse(
        "admin:scheduler_jobrun_retry", args=[w.failed.pk]),
        "302 302 403 403 302 302"),
    Page("schedule form save", "post", _schedule_change,
        "302 302 403 403 302 302", lambda w: _form_data(w.schedule, enabled="")),
    Page("dashboard", "get", lambda w: reverse("ops-dashboard"),
        "302 302 403 200 200 200"),
    Page("job page", "get", lambda w: reverse("admin:ops_job", args=[w.schedule.name]),
        "302 302 403 200 200 200"),
    Page("job page run now", "post", lambda w: reverse(
        "admin:ops_job_run_now", args=[w.schedule.name]),
        "302 302 403 403 302 302"),
    Page("job page disable with a note", "post", lambda w: reverse(
        "admin:ops_job_set_enabled", args=[w.schedule.name]),
        "302 302 403 403 302 302", lambda w: {"enabled": "0", "note": "maintenance"}),
]
# fmt: on


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PAGES, ids=str)
def test_custom_admin_views_check_the_same_permissions(world, user_for, page: Page, role: str):
    client = _admin_client(user_for(role))
    before = snapshot()

    if page.method == "get":
        response = client.get(page.url(world))
    else:
        response = client.post(page.url(world), page.data(world) if page.data else {})

    status = expected(page.statuses)[role]
    assert response.status_code == status, response.content[:300]
    if status == 302 and role in ("anonymous", "non-staff"):
        assert reverse("admin:login") in response["Location"]
    if page.method == "post" and role in ("operator", "superuser"):
        assert snapshot() != before
    else:
        assert snapshot() == before


@pytest.mark.parametrize(
    ("role", "run_now", "retry", "incidents"),
    [
        ("viewer", False, False, True),
        ("operator", True, True, True),
        ("superuser", True, True, True),
    ],
)
def test_buttons_show_only_to_roles_that_may_press_them(
    world, user_for, role, run_now, retry, incidents
):
    client = _admin_client(user_for(role))
    schedule_page = client.get(_schedule_change(world)).content.decode()
    run_page = client.get(
        reverse("admin:scheduler_jobrun_change", args=[world.failed.pk])
    ).content.decode()
    ledger = client.get(reverse("admin:scheduler_jobrun_changelist")).content.decode()

    job_page = client.get(reverse("admin:ops_job", args=[world.schedule.name])).content.decode()

    assert ('id="ops-run-now"' in schedule_page) is run_now
    assert ('id="ops-run-now"' in job_page) is run_now
    assert ('id="ops-switch"' in job_page) is run_now  # operators may also disable
    assert ('id="ops-retry"' in run_page) is retry
    assert ('id="ops-open-incidents"' in ledger) is incidents


def test_a_staff_user_without_permissions_sees_no_links_it_cannot_follow(world, user_for):
    page = _admin_client(user_for("staff")).get(reverse("admin:index"))
    assert page.status_code == 200
    body = page.content.decode()
    assert reverse("ops-dashboard") not in body
    assert reverse("admin:scheduler_jobrun_changelist") not in body


# ---------------------------------------------------------------------------------------------
# The groups and the named permissions
# ---------------------------------------------------------------------------------------------


def _names(group: str) -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in Group.objects.get(name=group).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


def test_every_named_permission_exists_where_the_constants_say():
    for name in perms.NAMED:
        app_label, codename = name.split(".")
        assert Permission.objects.filter(
            content_type__app_label=app_label, codename=codename
        ).exists(), name


def test_viewers_may_view_everything_and_change_nothing():
    viewers = _names(perms.VIEWERS)
    assert {perms.VIEW_SCHEDULE, perms.VIEW_RUN, perms.VIEW_INCIDENT, perms.VIEW_METRICS} <= viewers
    assert {"games.view_gamesession", "referrals.view_payouthold"} <= viewers
    assert all(name.split(".")[1].startswith("view_") for name in viewers)
    assert not any(name.startswith(("auth.", "authtoken.")) for name in viewers)


def test_operators_are_viewers_plus_the_day_to_day_actions_and_no_more():
    assert _names(perms.OPERATORS) == _names(perms.VIEWERS) | set(perms.OPERATOR_EXTRA)
    assert perms.ADD_SCHEDULE not in _names(perms.OPERATORS)
    assert perms.DELETE_SCHEDULE not in _names(perms.OPERATORS)


def test_syncing_the_groups_twice_changes_nothing_and_undoes_hand_edits():
    perms.jobsite_groups_sync()
    first = (_names(perms.VIEWERS), _names(perms.OPERATORS))
    Group.objects.get(name=perms.VIEWERS).permissions.add(
        Permission.objects.get(content_type__app_label="auth", codename="add_user")
    )

    perms.jobsite_groups_sync()
    perms.jobsite_groups_sync()

    assert (_names(perms.VIEWERS), _names(perms.OPERATORS)) == first
    assert Group.objects.filter(name__in=[perms.VIEWERS, perms.OPERATORS]).count() == 2


def test_a_scraper_with_only_view_metrics_reads_metrics_and_nothing_else(world, django_user_model):
    scraper = django_user_model.objects.create_user("prometheus", is_staff=True)
    app_label, codename = perms.VIEW_METRICS.split(".")
    scraper.user_permissions.add(
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
    )
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=scraper).key}")

    assert client.get("/metrics").status_code == 200
    assert client.get("/api/jobs/").status_code == 403
    assert client.get("/api/jobs/history").status_code == 403


def test_a_ledger_reader_without_schedule_access_gets_no_job_page_links(world, django_user_model):
    reader = django_user_model.objects.create_user("ledger-reader", is_staff=True)
    app_label, codename = perms.VIEW_RUN.split(".")
    reader.user_permissions.add(
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
    )
    client = _admin_client(reader)
    job_page = reverse("admin:ops_job", args=[world.failed.job])

    ledger = client.get(reverse("admin:scheduler_jobrun_changelist"))
    detail = client.get(reverse("admin:scheduler_jobrun_change", args=[world.failed.pk]))

    assert ledger.status_code == detail.status_code == 200
    assert job_page not in ledger.content.decode()
    assert job_page not in detail.content.decode()
    assert world.failed.job in detail.content.decode()
    assert client.get(job_page).status_code == 403
