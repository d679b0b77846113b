"""The venue bus's certificate authority (sync/central/bus_ca.py, docs/bus.md
"Transport"): one CA per event (its key a file under DIR/keys, its certificate
a row of ``bus_ca``) and every device certificate it issued (``bus_certificates``,
the audit trail)."""

from sync.central.schema import execute

revision = "bus_1_ca_certificates"
down_revision = "central_2_device_codes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute("CREATE TABLE bus_ca (event {text} PRIMARY KEY, cert {text} NOT NULL, key_file {text} NOT NULL,"
            " created {real} NOT NULL)")
    execute("CREATE TABLE bus_certificates (serial {text} PRIMARY KEY, event {text} NOT NULL,"
            " device_id {text} NOT NULL, not_after {real} NOT NULL, issued_at {real} NOT NULL)")
    execute("CREATE INDEX bus_certificates_device ON bus_certificates(device_id)")
