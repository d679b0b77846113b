"""Alembic revisions of the central's schema (one file each; see sync.central.schema)."""
