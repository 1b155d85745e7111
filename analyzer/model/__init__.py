"""The shared model: the bottom layer every other part of profile-first stands on.

Collectors fill a `SpanTable` (`spans`, built by `table`) and `ServiceSignals` (`signals`);
heuristics emit `Finding`s (`findings`); profiles are `Profile`s (`profile`). The helpers here
(`arrays`, `semconv`, `statement`, `profile_frames`) are pure functions over those types.

Modules in this package import nothing from the rest of `analyzer`, nor from `collectors` or
`heuristics`; `tests/test_layering.py` holds every package to its layer.
"""
