"""The central's database schema: Alembic revisions, applied when a store opens.

``sync/central/schema/versions/`` holds one file per revision, in one line
(each names the one before it in ``down_revision``). Opening a
:class:`~sync.central.store.CentralStore` runs :func:`upgrade`: every revision
not yet applied, **all in one transaction** together with Alembic's
``alembic_version`` row, so a crash or an error leaves the schema as it was.
Nobody runs ``alembic`` by hand and no ``alembic.ini`` is needed: the
configuration is built here (:func:`config`), and the revisions ship inside
the package.

Several processes may open the store at once (``gate central serve`` started
N times against one PostgreSQL): the first takes the lock, the others wait
and then find nothing to do. PostgreSQL: ``pg_advisory_xact_lock`` at the
start of the migrating transaction. SQLite: that transaction is ``BEGIN
IMMEDIATE`` (the database's one write lock; in WAL mode the same as
EXCLUSIVE), which other processes wait for (busy timeout 30 s).

Databases made before Alembic, by the ``Migration(name, sql)`` list and its
``_migrations`` table, are adopted: each old migration is the revision of the
same name, so :func:`upgrade` stamps the last one of the line that the
``_migrations`` table lists and carries on from there. (``_migrations`` is
left in place, no longer written.)

Adding a revision (another engineer)
------------------------------------
1. ``python -m sync.central.schema new NAME -m "what it adds"`` writes
   ``versions/NAME.py`` with ``revision = "NAME"`` and ``down_revision`` = the
   current head. Name it like the old migrations: ``<area>_<n>_<what>``, e.g.
   ``ops_2_alerts``.
2. Put the SQL in ``upgrade()``: ``execute("CREATE TABLE ...", "CREATE INDEX ...")``,
   one statement per argument (nothing is split on ``;``, so a ``;`` inside a
   literal is fine), with the type placeholders of :data:`sync.central.db.DIALECT_TYPES`
   (``{text}`` ``{blob}`` ``{real}`` ``{bigint}`` ``{id}``) where SQLite and
   PostgreSQL differ. Python logic is fine too (``alembic.op.get_bind()``
   is the connection, inside the migrating transaction). Write portable SQL:
   every revision runs on both backends (tests/test_central_schema.py).
3. Revisions only move forward: no ``downgrade()``.

Converting a ``Migration(name, sql)`` from a branch made before Alembic is
mechanical: ``new`` with the *same name* (so databases made on that branch are
adopted), then move the SQL string into ``execute(...)``, one argument per
``;``-separated statement, placeholders unchanged. If two branches added
revisions after the same head, re-point one's ``down_revision`` at the other
so the line stays single (a test checks there is one head).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from gate.errors import ConfigError
from sync.central.db import render

HERE = Path(__file__).resolve().parent
VERSIONS = HERE / "versions"
LOCK_KEY = 7242001  # pg_advisory_xact_lock key of the central's migrations (also used before Alembic)


class SchemaError(ConfigError):
    """A revision failed (the database is left as it was)."""


def config(extra_locations: Sequence[Path] = ()):
    """Alembic's configuration, built in code (no alembic.ini): this package's
    env.py and versions, plus ``extra_locations`` (tests add revisions)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(str(p) for p in (VERSIONS, *extra_locations)))
    cfg.set_main_option("file_template", "%%(rev)s")
    return cfg


def script(extra_locations: Sequence[Path] = ()):
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(config(extra_locations))


def execute(*statements: str) -> None:
    """Inside a revision's ``upgrade()``: run each statement as it is (no
    parameters, nothing split), with the type placeholders filled for this
    database (``{text}``, ``{blob}``, ``{real}``, ``{bigint}``, ``{id}``)."""
    from alembic import op

    import sqlalchemy as sa

    bind = op.get_bind()
    # the DB-API cursor with no parameters at all: nothing reads ':x' or '%' in the text
    cur = bind.connection.dbapi_connection.cursor()
    try:
        for stmt in statements:
            sql = render(stmt, bind.dialect.name)
            try:
                cur.execute(sql)
            except bind.dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy would raise it
                raise sa.exc.DBAPIError.instance(sql, None, exc, bind.dialect.loaded_dbapi.Error,
                                                 dialect=bind.dialect) from exc
    finally:
        cur.close()


def upgrade(database, *, extra_locations: Sequence[Path] = ()) -> list[str]:
    """Bring the database to the newest revision in one transaction, under the
    migration lock; returns the revisions applied (none when it was current)."""
    heads = heads_on_disk(extra_locations)
    if len(heads) == 1 and current(database) in heads:
        return []  # the usual start: up to date, and Alembic (a quarter second of imports) stays unloaded
    import sqlalchemy as sa
    from alembic import command
    from alembic.util import CommandError

    cfg = config(extra_locations)
    applied: list[str] = []
    with database.writer() as db:  # SQLite: BEGIN IMMEDIATE, the one write lock, across processes
        if db.dialect == "postgresql":  # several processes starting at once: one migrates
            db.run("SELECT pg_advisory_xact_lock(:k)", {"k": LOCK_KEY})
        cfg.attributes["connection"] = db.conn
        cfg.attributes["applied"] = applied
        adopt = _adopted_revision(db, script(extra_locations))
        if adopt is not None:
            command.stamp(cfg, adopt)
        try:
            command.upgrade(cfg, "head")
        except CommandError as exc:  # e.g. a revision this release does not know: a newer one migrated it
            raise SchemaError(f"the central database is at a schema this release does not know ({exc}): "
                              "run the release that last served it, or a newer one") from None
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise  # the database went away: Unavailable, as for any request
            first = (str(exc.orig).strip().splitlines() or ["?"])[0]
            raise SchemaError(f"the central database could not be brought to the current schema "
                              f"({first}); nothing was changed (the upgrade is one transaction): "
                              "check that --db names the central's own database") from exc
    return applied


_REV = re.compile(r"""^revision\s*(?::[^=\n]*)?=\s*['"]([^'"]+)['"]""", re.M)
_DOWN = re.compile(r"""^down_revision\s*(?::[^=\n]*)?=\s*['"]([^'"]+)['"]""", re.M)


def heads_on_disk(extra_locations: Sequence[Path] = ()) -> set[str]:
    """The newest revision(s), read from the files' ``revision``/``down_revision``
    lines without loading Alembic (a start-up shortcut; a test checks it agrees
    with Alembic). Anything it cannot read makes more heads, never fewer, so
    the shortcut is then simply not taken."""
    revs, downs = set(), set()
    for folder in (VERSIONS, *extra_locations):
        for f in Path(folder).glob("*.py"):
            if f.name == "__init__.py":
                continue
            text = f.read_text()
            revs.update(_REV.findall(text) or [f"?{f}"])
            downs.update(_DOWN.findall(text))
    return revs - downs


def current(database) -> str | None:
    """The database's revision (None: no schema yet)."""
    import sqlalchemy as sa
    with database.reader() as db:
        if not sa.inspect(db.conn).has_table("alembic_version"):
            return None
        return db.scalar("SELECT version_num FROM alembic_version")


def _adopted_revision(db, scripts) -> str | None:
    """For a database made by the pre-Alembic ``Migration`` list: the revision
    to stamp (the last of the line whose name ``_migrations`` lists), else None."""
    import sqlalchemy as sa

    insp = sa.inspect(db.conn)
    if insp.has_table("alembic_version") or not insp.has_table("_migrations"):
        return None
    done = {name for (name,) in db.all("SELECT name FROM _migrations")}
    last = None
    for rev in reversed(list(scripts.walk_revisions())):  # oldest first
        if rev.revision not in done:
            break
        last = rev.revision
    return last
