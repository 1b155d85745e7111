"""`profile-first demo`: a small instrumented system on loopback, each service with one real cause.

The orchestrator (`run.py`) starts profile-first's own OTLP receiver, then every demo service
as a separate process (`python -m analyzer.demo.services NAME`) exporting traces and runtime
metrics to it over OTLP/HTTP, drives a bounded load in phases, and analyzes what arrived.

| service | its one real cause | expected verdict |
|---|---|---|
| orders | N+1 queries on an unindexed SQLite table | not_recommended (database) |
| gateway | three slow downstream HTTP calls made one after another | not_recommended (network) |
| profile | cache-aside in front of SQLite whose entries expire before they are reused | not_recommended (caching) |
| render | pure-Python computation saturating its core | recommended (cpu_bound) |
| feed | a large live heap plus per-request cyclic garbage: long gen-2 GC pauses | recommended (gc_pause) |
"""
