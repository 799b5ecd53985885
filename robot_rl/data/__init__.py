"""Episode recordings on disk."""
