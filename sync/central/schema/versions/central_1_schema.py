"""The central's tables: events, issuer keys, tickets, counters, enrolment,
devices, lane buckets, scans, problems. (Converted from the first
``Migration("central_1_schema", ...)``: databases made by it are adopted.)

A SQLite central.db made before migrations existed (the release before them)
already has some of these tables: it gets what is new instead.
"""

import sqlalchemy as sa
from alembic import op

from sync.central.schema import execute

revision = "central_1_schema"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = (
    """CREATE TABLE events (
        event {text} PRIMARY KEY, venue {text} NOT NULL DEFAULT '', starts_at {real}, ends_at {real},
        created {real} NOT NULL)""",
    "CREATE INDEX events_venue ON events(venue)",
    """CREATE TABLE issuer_keys (
        kid {text} PRIMARY KEY, event {text} NOT NULL, pub {blob} NOT NULL, status {text} NOT NULL,
        created {real} NOT NULL)""",
    """CREATE TABLE tickets (
        ticket_id {text} PRIMARY KEY, event {text} NOT NULL, tier {text} NOT NULL DEFAULT '', zone {text},
        version INTEGER NOT NULL DEFAULT 1, status {text} NOT NULL DEFAULT 'valid',
        entries INTEGER NOT NULL DEFAULT 1, reentry INTEGER NOT NULL DEFAULT 0,
        face_required INTEGER NOT NULL DEFAULT 0, face_template {text}, holder {text},
        holder_pub {blob}, change_seq {bigint} NOT NULL, revoked_at {real})""",
    "CREATE INDEX tickets_feed ON tickets(event, change_seq)",
    "CREATE TABLE counters (name {text} PRIMARY KEY, value {bigint} NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('change', 0)",
    "INSERT INTO counters (name, value) VALUES ('scan', 0)",
    """CREATE TABLE enrol_codes (
        code_hash {text} PRIMARY KEY, event {text} NOT NULL, created {real} NOT NULL, used_by {text},
        used_at {real})""",
    "CREATE TABLE enrol_failures (id {id}, client {text} NOT NULL, at {real} NOT NULL, why {text} NOT NULL)",
    "CREATE INDEX enrol_failures_client ON enrol_failures(client, at)",
    """CREATE TABLE devices (
        device_id {text} PRIMARY KEY, event {text} NOT NULL, venue {text} NOT NULL DEFAULT '',
        pub {blob} NOT NULL, token_hash {text} NOT NULL UNIQUE, status {text} NOT NULL DEFAULT 'active',
        enrolled_at {real} NOT NULL, quarantined_at {real}, quarantine_reason {text})""",
    """CREATE TABLE lane_buckets (
        device_id {text} NOT NULL, lane {text} NOT NULL, tokens {real} NOT NULL, last_ms {bigint},
        PRIMARY KEY (device_id, lane))""",
    """CREATE TABLE scans (
        id {bigint} PRIMARY KEY, device_id {text} NOT NULL, seq {bigint} NOT NULL, event {text} NOT NULL,
        ts_ms {bigint}, kind {text}, mode {text}, decision {text}, reason {text}, ticket_id {text},
        unlisted INTEGER, consumes INTEGER, ref {bigint}, lane {text}, proven INTEGER,
        record {blob} NOT NULL, hash {blob} NOT NULL, received {real} NOT NULL, UNIQUE (device_id, seq))""",
    "CREATE INDEX scans_event_id ON scans(event, id)",
    "CREATE INDEX scans_ticket ON scans(event, ticket_id)",
    "CREATE INDEX scans_rollback ON scans(device_id, ref) WHERE kind = 'rollback'",
    """CREATE TABLE problems (
        id {id}, event {text}, device_id {text}, kind {text} NOT NULL, detail {text} NOT NULL,
        at {real} NOT NULL)""",
)

# a SQLite central.db made before migrations existed: add what is new
FROM_UNVERSIONED = (
    "ALTER TABLE events ADD COLUMN venue TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE events ADD COLUMN starts_at REAL",
    "ALTER TABLE events ADD COLUMN ends_at REAL",
    "CREATE INDEX events_venue ON events(venue)",
    "ALTER TABLE tickets ADD COLUMN holder_pub BLOB",
    "INSERT INTO counters (name, value) VALUES ('change', 0) ON CONFLICT (name) DO NOTHING",
    """INSERT INTO counters (name, value) SELECT 'scan', coalesce(max(id), 0) FROM scans WHERE true
        ON CONFLICT (name) DO NOTHING""",
    "ALTER TABLE enrol_codes ADD COLUMN used_at REAL",
    "CREATE TABLE enrol_failures (id INTEGER PRIMARY KEY, client TEXT NOT NULL, at REAL NOT NULL, why TEXT NOT NULL)",
    "CREATE INDEX enrol_failures_client ON enrol_failures(client, at)",
    "ALTER TABLE devices ADD COLUMN venue TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE devices ADD COLUMN quarantined_at REAL",
    "ALTER TABLE devices ADD COLUMN quarantine_reason TEXT",
    "CREATE UNIQUE INDEX devices_token ON devices(token_hash)",
    """CREATE TABLE lane_buckets (
        device_id TEXT NOT NULL, lane TEXT NOT NULL, tokens REAL NOT NULL, last_ms INTEGER,
        PRIMARY KEY (device_id, lane))""",
    "ALTER TABLE scans ADD COLUMN proven INTEGER",
    "CREATE INDEX scans_event_id ON scans(event, id)",
)


def upgrade() -> None:
    bind = op.get_bind()
    legacy = bind.dialect.name == "sqlite" and sa.inspect(bind).has_table("scans")
    execute(*(FROM_UNVERSIONED if legacy else SCHEMA))
