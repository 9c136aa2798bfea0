"""The benchmark suite behind `make bench`: one run, one table, bench/results.md."""
