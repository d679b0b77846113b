"""Enrolment codes made for one device (``gate central device enroll --device
ID``): such a code re-admits that device (same id and key, a new token); NULL
is a code for a new device, as before."""

from sync.central.schema import execute

revision = "central_2_device_codes"
down_revision = "ops_1_accounts_sessions_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute("ALTER TABLE enrol_codes ADD COLUMN device_id {text}")
