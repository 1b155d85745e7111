"""profile-first: measure why a service is slow before anyone proposes a rewrite."""

__version__ = "0.1.0"
