"""${message}

Revision ${up_revision}, after ${down_revision | comma,n}.
See sync/central/schema/__init__.py for how revisions are written.
"""

from sync.central.schema import execute

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute(
        # one statement per argument; {text} {blob} {real} {bigint} {id} where SQLite and PostgreSQL differ
    )
