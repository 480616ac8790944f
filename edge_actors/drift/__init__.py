"""Drift detection: statistical tests, distances and the streaming detector."""
