"""The ops room's tables: accounts, sessions, event capacity, gate status.
(Converted from ``Migration("ops_1_accounts_sessions_status", ...)`` that
sync/central/ops/db.py registered at import: databases made by it are adopted.)
"""

from sync.central.schema import execute

revision = "ops_1_accounts_sessions_status"
down_revision = "central_1_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute(
        """CREATE TABLE ops_accounts (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, salt TEXT NOT NULL, pwhash TEXT NOT NULL,
            failed INTEGER NOT NULL DEFAULT 0, locked_until {real} NOT NULL DEFAULT 0, created {real} NOT NULL)""",
        """CREATE TABLE ops_sessions (
            token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, created {real} NOT NULL, expires {real} NOT NULL)""",
        "CREATE TABLE ops_capacity (event TEXT PRIMARY KEY, capacity INTEGER NOT NULL)",
        """CREATE TABLE ops_gate_status (
            device_id TEXT PRIMARY KEY, last_contact {real} NOT NULL, link TEXT, outbox {bigint},
            clock_offset_ms {bigint}, ledger_age_s {bigint}, reported_at {real})""",
    )
