"""The ops room: a live dashboard of the doors for central ops, under ``/ops``
(pages in :mod:`.web`, queries in :mod:`.queries`, accounts in :mod:`.accounts`).
Importing this package stays light: the CLI loads it without FastAPI."""


def mount(app, store, **kw):
    """Add the ops room to a central app; returns ``require_ops`` for the report API."""
    from sync.central.ops.web import mount as _mount
    return _mount(app, store, **kw)


def demo_login(store, base_url: str) -> str:
    from sync.central.ops.web import demo_login as _demo_login
    return _demo_login(store, base_url)
