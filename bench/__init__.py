"""Benchmarks (docs/testing.md, "Benchmarks"): ``python -m bench`` (see bench/run.py)."""
