"""Benchmarks of tuneloop: one script per benchmark (`python -m benchmarks.NAME`), results in `results/`."""
