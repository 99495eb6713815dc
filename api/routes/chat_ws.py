"""Placeholder: filled in by the issue that owns these routes."""
