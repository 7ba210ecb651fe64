"""Shared test helpers: tiny models with known structure and assertion helpers."""
