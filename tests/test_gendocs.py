"""docs/benchmarks.md and docs/reliability.md are generated: the committed pages are exactly what
the committed report data (docs/data/) and templates render, and every section says which run
(date, commit, machine) its numbers come from. A hand edit of either page fails here."""

from __future__ import annotations

import json
import re

import pytest

from devtools import gendocs

PAGES = gendocs.pages()


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_the_committed_page_is_what_its_committed_data_renders(page):
    assert page.read_text() == PAGES[page](), (
        f"{page.name} differs from its rendering: do not edit it by hand; edit its template or "
        "re-run `make bench` / `make chaos`, then `python -m devtools.gendocs render`"
    )


def test_a_hand_edited_number_is_caught(tmp_path, monkeypatch):
    # Given the benchmarks page with one number changed by hand
    page = tmp_path / "benchmarks.md"
    rendered = gendocs.render_benchmarks()
    first_number = re.search(r"\| (\d+)[ .(]", rendered)
    assert first_number, "the page has a table with numbers"
    start, end = first_number.span(1)
    page.write_text(rendered[:start] + str(int(first_number.group(1)) + 1) + rendered[end:])
    monkeypatch.setattr(gendocs, "BENCH_DOC", page)
    # When the pages are checked, then that page is named
    assert any("benchmarks.md" in problem for problem in gendocs.check())


def test_both_pages_carry_the_generated_header():
    for page, made_by in ((gendocs.BENCH_DOC, "make bench"), (gendocs.CHAOS_DOC, "make chaos")):
        head = page.read_text().split("\n\n", 2)[1]
        assert "Generated file: do not edit" in head, page.name
        assert f"`{made_by}`" in head, page.name
        assert "templates/" in head, page.name


def test_every_benchmark_section_names_its_date_commit_and_machine():
    body = gendocs.BENCH_DOC.read_text()
    for suite, record in gendocs.bench_data().items():
        for part, entry in record["parts"].items():
            run = entry["run"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\d(T\d\d:\d\d:\d\dZ)?", run["date"]), (suite, part)
            assert re.fullmatch(r"[0-9a-f]{7,40}", run["commit"]), (suite, part)
            line = gendocs.run_line(run)
            assert f"`{run['commit']}`" in line
            if run.get("imported"):  # the machine as the hand-written page described it
                assert run["machine_text"] in line, (suite, part)
            else:
                assert f"{run['machine']['cpus']} CPUs" in line, (suite, part)
                assert f"load {run['machine']['load'][0]} at the start" in line, (suite, part)
            assert line in body, f"{suite}/{part}: its run line is not on the page"


def test_the_reliability_page_names_every_run_it_shows():
    data = json.loads(gendocs.CHAOS_DATA.read_text())
    body = gendocs.CHAOS_DOC.read_text()
    used = {fault["run"] for fault in data["faults"]}
    for run in data["runs"]:
        assert run["run_id"] in used
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["date"])
        assert f"at `{run['commit']}`" in body
        assert f"{run['machine']['cpus']} CPUs" in body
        assert f"load {run['machine']['load'][0]} at the start" in body


def test_every_chaos_test_describes_its_fault_and_what_it_expects():
    """One home for a fault's description: its test's docstring (first paragraph: what is
    injected; a paragraph starting "Expected:": the outcome it holds the system to)."""
    described = gendocs.fault_descriptions()
    assert len(described) >= 15
    missing = [name for name, about in described.items() if not about["expected"]]
    assert missing == []


def test_a_benchmark_part_run_alone_replaces_only_its_own_section(tmp_path, monkeypatch):
    # Given a suite with two parts recorded by an earlier run
    monkeypatch.setattr(gendocs, "ROOT", tmp_path)
    old = {"date": "2026-01-01T00:00:00Z", "commit": "aaaaaaa", "machine": gendocs.machine()}
    new = {**old, "date": "2026-02-02T00:00:00Z", "commit": "bbbbbbb"}
    gendocs.bench_record(
        "demo", {"a": [gendocs.text("a1")], "b": [gendocs.text("b1")]}, old, data_dir=tmp_path
    )
    # When part b is run alone
    gendocs.bench_record("demo", {"b": [gendocs.text("b2")]}, new, data_dir=tmp_path)
    # Then a keeps its numbers and its run, b has the new ones
    parts = json.loads((tmp_path / "demo.json").read_text())["parts"]
    assert (parts["a"]["blocks"], parts["a"]["run"]["commit"]) == ([{"text": "a1"}], "aaaaaaa")
    assert (parts["b"]["blocks"], parts["b"]["run"]["commit"]) == ([{"text": "b2"}], "bbbbbbb")
