"""Benchmark scripts: each prints a table of measured numbers (`python -m bench.all` runs them all)."""
