"""Benchmarks, run from the project's folder: ``python -m bench.batch`` (figures: docs/performance.md)."""
