"""The holder wallet's claim links (sync/central/wallet, docs/wallet.md): one row
per link (its token only as a hash), and the refusals counted per client
address (more than 10 a minute answer 429)."""

from sync.central.schema import execute

revision = "wallet_1_claims"
down_revision = "bus_1_ca_certificates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute("CREATE TABLE wallet_claims (token_hash {text} PRIMARY KEY, ticket_id {text} NOT NULL,"
            " event {text} NOT NULL, version INTEGER NOT NULL, face {text} NOT NULL DEFAULT 'off',"
            " created {real} NOT NULL, expires {real} NOT NULL, state {text} NOT NULL DEFAULT 'open',"
            " used_at {real}, holder_pub {blob}, face_encodings {text}, face_at {real},"
            " face_tries INTEGER NOT NULL DEFAULT 0)")
    execute("CREATE INDEX wallet_claims_ticket ON wallet_claims(ticket_id, version)")
    execute("CREATE TABLE wallet_failures (id {id}, client {text} NOT NULL, at {real} NOT NULL, why {text} NOT NULL)")
    execute("CREATE INDEX wallet_failures_client ON wallet_failures(client, at)")
