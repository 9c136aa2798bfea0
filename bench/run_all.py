"""`make bench`: the benchmark suite (bench/suite) in one run, one table, bench/results.md.

    python bench/run_all.py [--quick] [--events N] [--runs abcde] ...  (python -m bench.suite -h)

The micro-benchmarks run on their own: python bench/rules_eval.py, python -m bench.batcher_bench,
python -m bench.memory_bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from bench.suite.main import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
