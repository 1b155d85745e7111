"""Detectors, one module per category, registered as rules with stable codes (see registry)."""
