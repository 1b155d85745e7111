"""Instrumented workloads that record real OTLP traces (test input and the README example data)."""
