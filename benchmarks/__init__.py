"""Benchmarks, run as modules (``python -m benchmarks.planner_bench``)."""
