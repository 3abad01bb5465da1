"""Sweep files for ``python -m experiments.sweep`` (format: ``mg/sweep/spec.py``)."""
