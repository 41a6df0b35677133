"""Print the chaos suite's report: one row per test, from the lines the suite appended.

python -m tests.chaos.report [PATH]    # default: var/chaos/report.jsonl (CHAOS_REPORT)

`make chaos` then records the rows with its run's date, commit and machine in docs/data/chaos.json
and renders docs/reliability.md from them (devtools/gendocs.py), each fault described by its
test's docstring.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# One JSON line per chaos test, appended by the check after each test (tests/chaos/invariants.py).
REPORT = Path(
    os.environ.get("CHAOS_REPORT", Path(__file__).resolve().parents[2] / "var/chaos/report.jsonl")
)

COLUMNS = (
    ("fault", "fault"),
    ("outcome", "result"),
    ("runs", "runs"),
    ("slots_expected", "slots expected"),
    ("slots_accounted", "slots accounted for"),
    ("duplicates_prevented", "duplicates prevented"),
    ("money", "money invariant"),
    ("seconds", "s"),
)


def table(rows: list[dict[str, object]]) -> str:
    cells = [[str(row.get(key, "")) for key, _ in COLUMNS] for row in rows]
    heads = [title for _, title in COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + " |"
    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) + " |"
        for cell in cells
    ]
    return "\n".join([line, rule, *body])


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else REPORT
    if not path.exists():
        print(f"no chaos report at {path}: run `make chaos`", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(table(rows))
    failed = [row for row in rows if row["outcome"] not in ("pass", "known issue")]
    total = sum(float(row["seconds"]) for row in rows)
    print(f"\n{len(rows) - len(failed)}/{len(rows)} passed, {total:.0f} s in tests")
    for row in rows:
        if row.get("notes"):
            print(f"- {row['fault']}: {row['notes']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
