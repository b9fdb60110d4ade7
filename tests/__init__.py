"""Tests: run with `python -m pytest -q` (CPU, 8 fake devices from conftest.py)."""
