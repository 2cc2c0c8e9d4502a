"""Benchmarks of SPEC section 10: ``python -m bench`` (see bench/run.py)."""
