"""`make bench`: run every bench/bench_*.py (or those named), record and render their results.

Each module has `main(argv: list[str]) -> dict[str, list[Block]]`: its parts (a suite run with
`--only PART` returns that part alone), each a list of tables and paragraphs built with
`devtools.gendocs.table/text/bullets`. Benchmarks report ratios measured side by side in one run,
because absolute times on shared machines drift.

After each suite the runner writes var/bench/<suite>.json (this run: date, commit, machine, the
load it shared the machine with, the command) and merges its parts into
docs/data/bench/<suite>.json; then it renders docs/benchmarks.md from that data and
bench/templates/benchmarks.md. Commit the data with the document (tests/test_gendocs.py renders
it again and compares).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

from devtools import gendocs


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    available = sorted(path.stem.removeprefix("bench_") for path in here.glob("bench_*.py"))
    names = [arg for arg in argv if arg in available] or available
    options = [arg for arg in argv if arg not in available]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    from bench import _env

    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"\n== bench {name} ==", flush=True)
        run = {"date": gendocs.now_utc(), **gendocs.git_commit(), "machine": gendocs.machine()}
        started = time.perf_counter()
        parts = module.main(options)
        run["machine"].update(_env.VERSIONS)  # the servers it ran against, read while they ran
        run.update(
            load_after=gendocs.load_now(),
            seconds=round(time.perf_counter() - started),
            command=f'make bench ARGS="{" ".join([name, *options])}"',
        )
        path = gendocs.bench_record(name, parts, run)
        print(f"recorded {', '.join(parts)} in {path.relative_to(gendocs.ROOT)}")
    gendocs.write("benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
