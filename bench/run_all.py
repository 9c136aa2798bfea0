"""`make bench`: every benchmark in one run (shared machines are noisy: compare within a run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RUNS = [
    ["bench/rules_eval.py"],
    ["-m", "bench.batcher_bench"],
    ["-m", "bench.service_throughput", "--events", "20000", "--in-flight", "8", "24"],
]


def main() -> int:
    for args in RUNS:
        print(f"\n$ python {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, *args], cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
