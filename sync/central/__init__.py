"""The reference central: store, HTTP API, reconciliation, its commands."""
