"""Benchmark rows. Each module defines ``ROWS: list[BenchRow]``; ``run.py`` finds them all.

Add a module here to add rows (see ``benchmarks/README.md``); modules named ``_*.py`` are
helpers and are not scanned for rows.
"""
