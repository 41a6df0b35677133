"""What Prometheus itself says about /metrics and deploy/prometheus/: promtool's checks of a real
scrape, of the rules and of the scrape config, the rules' unit tests (rules_test.yml), and a real
Prometheus server scraping a live server and paging a missed run by its job_name.

Enable: `apt-get install -y prometheus` (Debian's package brings /usr/bin/promtool; .ci/run
does it). Without promtool these tests skip and say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from devtools.embedded import free_port
from monitoring.models import Incident
from scheduler.models import JobRun
from scheduler.services.retention import retention_prune
from tests.ops.conftest import make_run
from tests.ops.test_health_metrics import beat_seen

pytestmark = pytest.mark.django_db

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="needs Prometheus' promtool: run `apt-get install -y prometheus` (.ci/run does it)",
)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def scrape_text(api) -> str:
    response = api.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.process
@needs_promtool
def test_promtool_finds_nothing_to_say_about_a_real_scrape(api, runs):
    # given beat alive, an open incident, a missed and a lost run beside the fixture's hour
    beat_seen(1)
    missed = make_run("cleanup", timezone.now() - timedelta(hours=2), JobRun.Status.MISSED)
    make_run("settlement", timezone.now() - timedelta(hours=2), JobRun.Status.LOST)
    Incident.objects.create(
        job="cleanup", kind="missed", opened_at=timezone.now(), summary="cleanup missed its run",
        first_run_id=missed.pk, first_slot=missed.slot, last_run_id=missed.pk,
        last_slot=missed.slot,
    )  # fmt: skip
    # when promtool lints what Prometheus would scrape
    checked = promtool("check", "metrics", stdin=scrape_text(api))
    # then: exit 0 and not a single finding
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


@pytest.mark.process
@needs_promtool
def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", str(DEPLOY / "rules.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@pytest.mark.process
@needs_promtool
def test_every_alert_passes_its_unit_tests():
    tested = promtool("test", "rules", str(DEPLOY / "rules_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test_and_names_the_job_by_job_name():
    rules = (DEPLOY / "rules.yml").read_text()
    tests = (DEPLOY / "rules_test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert {
        "JobMissedRun",
        "JobFailures",
        "JobNoRecentSuccess",
        "BeatDown",
        "BacklogGrowing",
        "QueueWithoutWorker",
    } <= (set(alerts))
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"{alert} has no unit test in rules_test.yml"
    assert "$labels.job }}" not in rules  # Prometheus' own label: the scrape job, not ours


@pytest.mark.process
@needs_promtool
def test_the_example_scrape_config_is_valid(tmp_path):
    # The token file is relative to the config, and promtool checks that it exists.
    for name in ("prometheus.yml", "rules.yml"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    (tmp_path / "jobsite-token").write_text("0123456789abcdef\n")
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def runs_total(api, job: str, status: str) -> float:
    for family in text_string_to_metric_families(scrape_text(api)):
        for sample in family.samples:
            if sample.name == "jobsite_job_runs_total" and sample.labels == {
                "job_name": job,
                "status": status,
            }:
                return sample.value
    raise AssertionError(f"no jobsite_job_runs_total sample for {job} {status}")


def test_the_runs_counter_does_not_fall_when_retention_prunes_the_ledger(api, schedules):
    # given runs old enough for retention, counted by a scrape
    old = timezone.now() - timedelta(days=40)
    for minute in range(10):
        make_run("referral-tier2", old + timedelta(minutes=minute))
    make_run("referral-tier2", old, JobRun.Status.MISSED, attempt=2)
    assert runs_total(api, "referral-tier2", "succeeded") == 10
    # when retention deletes them
    assert retention_prune(now=timezone.now())["runs_deleted"] == 11
    # then the counters stand, and a new run adds to them (rate() sees 1, not a reset)
    assert runs_total(api, "referral-tier2", "succeeded") == 10
    assert runs_total(api, "referral-tier2", "missed") == 1
    make_run("referral-tier2", timezone.now() - timedelta(minutes=1))
    assert runs_total(api, "referral-tier2", "succeeded") == 11


PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@contextmanager
def prometheus_scraping(base_url: str, token: str, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus (Debian's 2.42) scraping `base_url`/metrics every second with `token`
    and evaluating deploy/prometheus/rules.yml every second; yields its API's base URL."""
    (tmp_path / "token").write_text(token)
    target = base_url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{DEPLOY / 'rules.yml'}']\n"
        "scrape_configs:\n"
        "  - job_name: jobsite\n"
        "    authorization: {type: Token, credentials_file: token}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def prometheus_api(base: str, path: str, **params: str) -> list[dict]:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["alerts" if path == "alerts" else "result"]
    except OSError:
        return []  # not listening yet


def wait_for(found: Callable[[], list[dict]], *, seconds: float) -> list[dict]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.5)
    return []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="needs Debian's prometheus package")
def test_a_real_prometheus_keeps_job_name_and_pages_a_missed_run_by_its_job(
    live_server, staff_token, schedules, tmp_path
):
    beat_seen(1)
    with prometheus_scraping(live_server.url, staff_token, tmp_path) as prometheus:
        # given a scrape that saw settlement with no missed run
        query = 'jobsite_job_runs_total{job_name="settlement",status="missed"}'
        found = wait_for(lambda: prometheus_api(prometheus, "query", query=query), seconds=60)
        assert found, (tmp_path / "prometheus.log").read_text()[-2000:]
        [series] = found
        assert (series["metric"]["job"], series["value"][1]) == ("jobsite", "0")
        assert "exported_job" not in series["metric"]
        # when a slot of settlement is recorded missed
        make_run("settlement", timezone.now() - timedelta(minutes=2), JobRun.Status.MISSED)

        # then JobMissedRun fires for settlement, named by job_name in its labels and summary
        def firing() -> list[dict]:
            alerts = prometheus_api(prometheus, "alerts")
            return [a for a in alerts if a["labels"]["alertname"] == "JobMissedRun"]

        found = wait_for(firing, seconds=30)
        assert found, (tmp_path / "prometheus.log").read_text()[-2000:]
        [alert] = found
        assert alert["labels"]["job_name"] == "settlement"
        assert alert["annotations"]["summary"] == "settlement missed a run (missed)"
        assert alert["state"] == "firing"
