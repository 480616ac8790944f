"""Chaos tests: faults injected into a running agent under load (``make chaos``)."""
