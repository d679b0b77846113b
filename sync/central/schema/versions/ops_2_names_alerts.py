"""The ops room, second round: gate names (``gate central device name``),
alert acknowledgements with a note (who, when) and the alert history."""

from sync.central.schema import execute

revision = "ops_2_names_alerts"
down_revision = "wallet_1_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute(
        "CREATE TABLE ops_gate_names (device_id TEXT PRIMARY KEY, name TEXT NOT NULL, named_at {real} NOT NULL)",
        """CREATE TABLE ops_alerts (
            event TEXT NOT NULL, alert_key TEXT NOT NULL, level TEXT NOT NULL, kind TEXT NOT NULL,
            subject TEXT NOT NULL, started {real} NOT NULL, last_seen {real} NOT NULL, ended {real},
            acked_by TEXT, acked_at {real}, note TEXT, PRIMARY KEY (event, alert_key, started))""",
        "CREATE INDEX ops_alerts_open ON ops_alerts (event, ended)",
    )
