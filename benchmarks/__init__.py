"""Benchmarks: a realistic trace generator and the parse floors the readers are compared against."""
