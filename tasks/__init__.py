"""Benchmarks: one module per task, registered in `harness.plugins`."""
