"""Alembic's entry point for the central's schema (sync.central.schema.upgrade
runs it): migrations run on the connection, and inside the transaction, that
upgrade() opened and locked. There is no offline (SQL script) mode."""

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the central's schema is migrated by opening the store "
                       "(sync.central.schema.upgrade), not by the alembic command")
applied = config.attributes.get("applied")


def _record(ctx, step, heads, run_args) -> None:
    if applied is not None and step.is_upgrade and not step.is_stamp:
        applied.append(step.up_revision_id)


context.configure(connection=connection, on_version_apply=_record)
with context.begin_transaction():  # the caller's transaction: nothing is committed here
    context.run_migrations()
