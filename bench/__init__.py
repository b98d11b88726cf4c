"""Benchmark: the tutorial's own pipeline against this job's, side by side on one machine (see docs/performance.md)."""
