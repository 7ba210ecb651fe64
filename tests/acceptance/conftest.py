"""Acceptance tier: run with `pytest -m acceptance` (deselected by the default `pytest`)."""
