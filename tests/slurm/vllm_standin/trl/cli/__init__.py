"""Stand-in `trl.cli` (see ../__init__.py)."""
