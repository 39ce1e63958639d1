"""Benchmarks of sec_mm and the timing harness they share (not part of the package)."""
