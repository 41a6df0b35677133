"""The package layout (DESIGN.md "Layout we are moving to"), checked by reading the imports."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("jobsite", "scheduler", "monitoring", "games", "referrals", "ops")


def imported_modules(path: Path) -> Iterator[str]:
    """Every module an import statement in `path` names, at any depth (function-level too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            # `from devtools import launcher` names the package; count its members too
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_the_scan_sees_imports_inside_functions():
    launcher = ROOT / "devtools" / "launcher.py"
    assert "devtools.embedded" in set(imported_modules(launcher))
    assert "django.core.management" in set(imported_modules(launcher))  # imported in a function


@pytest.mark.parametrize("package", PRODUCTION)
def test_production_code_never_imports_devtools(package):
    """The launcher, embedded servers and pytest plugin serve `make run` / `make test` only; the
    image leaves devtools/ out, so an import from production code would fail in production."""
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_modules(path)
        if module == "devtools" or module.startswith("devtools.")
    ]
    assert offenders == []


OURS = (
    "core",
    "devtools",
    "jobsite",
    "scheduler",
    "monitoring",
    "games",
    "referrals",
    "ops",
    "tests",
    "bench",
)


def test_core_is_the_bottom_and_imports_nothing_of_ours():
    """`core` holds helpers every package may use; importing one of ours could close a cycle."""
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "core").rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in OURS and module.split(".")[0] != "core"
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "package", ["scheduler", "monitoring", "games", "referrals", "ops", "devtools"]
)
def test_apps_never_import_the_project_package(package):
    """`jobsite` is the top: settings, URLs, the Celery app. Apps reach the Celery app through
    `celery.current_app` / `shared_task` and shared helpers through `core`, so the project package
    can import any app without a cycle."""
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_modules(path)
        if module == "jobsite" or module.startswith("jobsite.")
    ]
    assert offenders == []


# -- the scheduler's read model (issue 15 item 3) ----------------------------------------------


def test_the_read_model_lives_in_the_scheduler_not_in_ops():
    """`ops` is interfaces only: the job overview, statistics, chart series, forecast and next
    starts are `scheduler.selectors`; no re-export is left behind in ops."""
    assert not (ROOT / "ops" / "selectors.py").exists()
    assert not (ROOT / "ops" / "selectors").exists()


def _imports_of(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """`path: module` for every import in `package` of one of the `forbidden` packages."""
    return [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]


def test_the_scheduler_imports_neither_ops_nor_monitoring():
    """The scheduler's read model (and everything else in it) needs nothing `ops` or `monitoring`
    defines: both sit above the scheduler and may import it, never the other way round."""
    assert _imports_of("scheduler", ("ops", "monitoring")) == []


# -- the monitoring domain (issue 15 item 3, second half) ---------------------------------------


def test_monitoring_never_imports_ops():
    """Monitoring (incidents, alerts, outages, the watchdog) is a domain over the scheduler and
    core; ops is its interface (admin, API, dashboard, metrics) and may import it, never the other
    way round."""
    assert _imports_of("monitoring", ("ops",)) == []


def test_ops_defines_no_models():
    """`ops` keeps interfaces only: admin, API, dashboard, job page, charts, metrics, health.

    Nothing with domain state is left in it: the audit trail moved to the scheduler (scheduler
    0009) and the incidents with their notifications to monitoring (monitoring 0001), both state
    only, their tables keeping the `ops_` names they were created with. What remains of ops'
    data is its migrations 0001-0008, which created those tables and must stay (monitoring 0001
    and scheduler 0009 depend on them). Its `post_migrate` receiver (the ready groups) is sent by
    monitoring, as Django sends none for an app without a models module.
    """
    from django.apps import apps

    assert not (ROOT / "ops" / "models.py").exists()
    assert not (ROOT / "ops" / "models").exists()
    assert list(apps.get_app_config("ops").get_models()) == []
    assert {model._meta.db_table for model in apps.get_app_config("monitoring").get_models()} == {
        "ops_incident",
        "ops_alertdelivery",
    }


def test_the_monitoring_domain_left_ops():
    """The alerts, outages, liveness judgement, broker queue reads, watchdog pass and `manage.py
    watchdog` are monitoring's; no copy or re-export is left behind in ops."""
    moved = {  # was in ops/ -> is in monitoring/
        "alerts.py": "alerts.py",
        "outages.py": "outages.py",
        "watchdog.py": "watchdog.py",
        "conf.py": "conf.py",
        "health.py": "liveness.py",
        "management/commands/watchdog.py": "management/commands/watchdog.py",
    }
    assert [old for old in moved if (ROOT / "ops" / old).exists()] == []
    assert [new for new in moved.values() if not (ROOT / "monitoring" / new).exists()] == []


def _calls(path: Path, names: set[str]) -> set[str]:
    """The names in `names` that `path` calls as a function or a method (`x.name(...)`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in names:
                found.add(name)
    return found


def test_one_next_starts_implementation():
    """Every next start shown (CLI, admin, API, job page, dashboard, edit preview) comes from
    `scheduler.selectors.next_starts`: it alone asks a cron for its next fire times, and nothing
    imports a copy or an alias of it from ops or uses croniter."""
    askers = sorted(
        str(path.relative_to(ROOT))
        for package in PRODUCTION
        for path in (ROOT / package).rglob("*.py")
        if _calls(path, {"next_fire_times"})
    )
    assert askers == ["scheduler/cron.py", "scheduler/selectors.py"]  # cron.py: its own check
    interfaces = [*(ROOT / "ops").rglob("*.py"), *(ROOT / "scheduler" / "management").rglob("*.py")]
    expanding = [
        str(path.relative_to(ROOT))
        for path in interfaces
        if _calls(path, {"fire_times", "latest_fire_time", "week_mask", "remaining_estimate"})
    ]
    assert expanding == []
    imports = [
        f"{path.relative_to(ROOT)}: {module}"
        for package in (*PRODUCTION, "tests", "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_modules(path)
        if module == "ops.services.next_slots" or module.split(".")[0] == "croniter"
    ]
    assert imports == []


APPS = ("scheduler", "monitoring", "ops", "games", "referrals")


def _lines_matching(pattern: str) -> set[tuple[str, str]]:
    """(module, line) of every code line of the apps matching `pattern` (migrations and comments
    left out)."""
    found = set()
    for package in APPS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for line in path.read_text().splitlines():
                code = line.split("#", 1)[0]
                if re.search(pattern, code):
                    found.add((str(path.relative_to(ROOT)), code.strip()))
    return found


def test_slot_tracking_and_beat_s_change_marker_are_written_in_one_module():
    """One owner per rule (STYLE.md): `schedule_tracking_restart` stamps `tracked_since`, and
    `schedules_changed` tells beat; every interface reaches them through a scheduler service.
    (bench/ keeps its own bulk seeding; the model's field definition is not a write.)"""
    tracking = {
        module
        for module, code in _lines_matching(r"\btracked_since\s*=(?!=)")
        if not code.startswith("tracked_since = models.")
    }
    assert tracking == {"scheduler/services/writes.py"}
    assert {module for module, _ in _lines_matching(r"update_changed\(")} == {
        "scheduler/services/writes.py"
    }


def test_ops_writes_no_schedule_row_itself():
    """The admin, the API and the per-job page call scheduler services; ops holds no write of
    a schedule, its offset or the audit trail."""
    writes = r"\.(save|delete|update|create|bulk_create|get_or_create|update_or_create)\("
    offenders = {
        (module, code)
        for module, code in _lines_matching(
            r"(PeriodicTask|PeriodicTasks|JobSchedule|CrontabSchedule|AuditEvent)\b.*" + writes
        )
        if module.startswith("ops/")
    }
    assert offenders == set()


# --- One owner of the JobRun state machine (scheduler/ledger.py) and of the lease SQL -------------

LEDGER = ROOT / "scheduler" / "ledger.py"
LOCKS = ROOT / "scheduler" / "locks.py"
_ROW_WRITES = {
    "create",
    "update",
    "bulk_create",
    "bulk_update",
    "get_or_create",
    "update_or_create",
}
# SQL that sets a run's status: an UPDATE of the ledger naming `status` in its SET list (before
# any FROM, WHERE or RETURNING), or an INSERT of a run (a new row has a status).
_STATUS_SQL = re.compile(
    r"UPDATE\s+scheduler_jobrun\s+SET\b(?:(?!\b(?:FROM|WHERE|RETURNING)\b)[^;])*?\bstatus\s*="
    r"|INSERT\s+INTO\s+scheduler_jobrun\b",
    re.IGNORECASE,
)
_LEASE_SQL = re.compile(r"\bscheduler_joblease\b", re.IGNORECASE)


def _sql_matches(node: ast.AST, pattern: re.Pattern[str]) -> bool:
    """A string literal (or a literal part of an f-string) that `pattern` finds something in."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and bool(pattern.search(node.value))
    )


def _root_name(node: ast.AST) -> str | None:
    """`JobRun` for `JobRun.objects.filter(...).update`: the name a call chain starts from."""
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _assigned_attributes(node: ast.AST) -> Iterator[ast.Attribute]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
        for part in ast.walk(target):
            if isinstance(part, ast.Attribute):
                yield part


def status_writes(source: str, *, model: str = "JobRun") -> Iterator[str]:
    """Where `source` writes a `model` row's status: ORM writes on a chain rooted at the model
    with `status=` (or `**values`, or any bulk write), the model built with `status=`, `x.status
    = ...` and `save(update_fields=[..."status"...])` in a module that names the model, and SQL
    that updates a run's status or inserts a run."""
    tree = ast.parse(source)
    names_model = any(isinstance(n, ast.Name) and n.id == model for n in ast.walk(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            keywords = {k.arg for k in node.keywords}
            func = node.func
            if isinstance(func, ast.Name) and func.id == model and "status" in keywords:
                yield f"line {node.lineno}: {model}(status=...)"
            elif isinstance(func, ast.Attribute) and _root_name(func) == model:
                bulk = func.attr.startswith("bulk_")
                named = keywords & {"status", "defaults", None}
                if func.attr in _ROW_WRITES and (bulk or named):
                    yield f"line {node.lineno}: {model}...{func.attr}(...)"
            if isinstance(func, ast.Attribute) and func.attr == "save" and names_model:
                for keyword in node.keywords:
                    fields = [
                        c.value for c in ast.walk(keyword.value) if isinstance(c, ast.Constant)
                    ]
                    if keyword.arg == "update_fields" and "status" in fields:
                        yield f"line {node.lineno}: save(update_fields=[... 'status' ...])"
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign) and names_model:
            for target in _assigned_attributes(node):
                if target.attr == "status":
                    yield f"line {node.lineno}: .status = ..."
        elif model == "JobRun" and _sql_matches(node, _STATUS_SQL):
            yield f"line {node.lineno}: SQL writing scheduler_jobrun.status"


def _production_files() -> Iterator[Path]:
    for package in (*PRODUCTION, "core"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def test_the_status_scan_sees_every_kind_of_write():
    source = '''
from scheduler.models import JobRun
JobRun.objects.filter(pk=1).update(status="lost")
JobRun.objects.filter(pk=1, status="running").update(**values)
JobRun.objects.create(job="j", status="queued")
JobRun.objects.bulk_create([row])
JobRun.objects.update_or_create(pk=1, defaults={"status": "failed"})
run = JobRun(job="j", status="missed")
run.status = "lost"
run.status, run.error = "lost", "why"
run.save(update_fields=["status", "error"])
SQL = "UPDATE scheduler_jobrun SET finished_at = now(), status = 'lost' WHERE id = %s"
FRESH = f"""INSERT INTO scheduler_jobrun (id, status) SELECT {1}, 'running'"""
'''
    assert len(list(status_writes(source))) == 11
    harmless = """
from scheduler.models import JobRun
JobRun.objects.filter(status="running").exists()
JobRun.objects.filter(pk=1).update(heartbeat_at=now)
JobRun.objects.filter(pk=1).delete()
Other.objects.filter(pk=1).update(status="sent")
SQL = "UPDATE scheduler_jobrun SET heartbeat_at = now() WHERE id = %s AND status = 'running'"
"""
    assert list(status_writes(harmless)) == []


def test_only_the_ledger_writes_a_runs_status():
    """Issue 15: every JobRun transition is a function of scheduler/ledger.py, which keeps the
    rules (only a running row ends, only a queued one starts or is missed, terminal is final).
    A write elsewhere would carry its own copy of them; call the ledger instead."""
    assert len(list(status_writes(LEDGER.read_text()))) > 10  # the scan sees the ledger's own
    offenders = [
        f"{path.relative_to(ROOT)} {where}"
        for path in _production_files()
        if path != LEDGER
        for where in status_writes(path.read_text())
    ]
    assert offenders == []


def test_only_locks_holds_lease_sql():
    """How a lease is taken, held and released is written once, in scheduler/locks.py; the
    ledger's run-path statements embed its pieces (LEASE_TAKE, LEASE_HELD, LEASE_RELEASE)."""
    offenders = [
        f"{path.relative_to(ROOT)} line {node.lineno}"
        for path in _production_files()
        if path != LOCKS
        for node in ast.walk(ast.parse(path.read_text()))
        if _sql_matches(node, _LEASE_SQL)
    ]
    offenders += [
        f"{path.relative_to(ROOT)} line {node.lineno}: JobLease...{node.func.attr}(...)"
        for path in _production_files()
        if path != LOCKS
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _ROW_WRITES | {"delete"}
        and _root_name(node.func) == "JobLease"
    ]
    assert offenders == []


def test_games_knows_nothing_of_referrals():
    """referrals builds on games, never the other way round; the project's `seed_demo` calls
    each app's seeder, so games no longer reaches referrals (it did, through importlib)."""
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "games").rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in ("referrals", "importlib")
    ]
    assert offenders == []


def test_every_interface_names_who_applies_or_removes_the_schedules():
    """`schedules_apply`/`remove` take a required actor and audit every schedule they write; a
    `None` slipped in would fail only at the audit row. Every call in the project's own code names
    one (test fixtures and benchmarks name themselves with `Actor.system`)."""
    unnamed = []
    for path in _production_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in ("schedules_apply", "schedules_remove"):
                continue
            actor = next((k.value for k in node.keywords if k.arg == "actor"), None)
            if actor is None or (isinstance(actor, ast.Constant) and actor.value is None):
                unnamed.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unnamed == []
