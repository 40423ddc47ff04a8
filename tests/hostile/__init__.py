"""Hostile inputs (a package: its conftest must not shadow tests/conftest.py)."""
