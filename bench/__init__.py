"""Benchmarks: `python -m bench.prepare`, `python -m bench.deliver`; results in bench/RESULTS.md."""
