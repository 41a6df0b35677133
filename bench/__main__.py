"""`make bench`: run every bench/bench_*.py (or those named) and print their tables.

Each module has `main(argv: list[str]) -> None`. Benchmarks report ratios measured side by side in
one run, because absolute times on shared machines drift.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    available = sorted(path.stem.removeprefix("bench_") for path in here.glob("bench_*.py"))
    names = [arg for arg in argv if arg in available] or available
    options = [arg for arg in argv if arg not in available]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"\n== bench {name} ==", flush=True)
        module.main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
