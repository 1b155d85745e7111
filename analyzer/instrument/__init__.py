"""Helpers a service installs in its own process so profile-first can measure what the runtime
does not export by itself (see the README's "Runtime metrics")."""
