"""Sub-commands that live in their own modules; `analyzer.cli` registers them."""
