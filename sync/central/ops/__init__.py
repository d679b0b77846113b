"""The ops room: a live dashboard of the doors for central ops, under ``/ops``.

- :mod:`.web`: ``mount()``, the room's state, the gate-status recorder, security headers;
- :mod:`.pages`: the pages, one ``APIRouter``; :mod:`.auth`: who is asking (dependencies);
- :mod:`.render` and ``templates/``: Jinja2 (autoescape, i18n; domain ``ops``), :mod:`.words`;
- :mod:`.queries`: what the pages show, by the report's definitions (sync/central/reconcile.py);
  :mod:`.views`: the chart, the report and a ticket's history as data for the templates;
- :mod:`.accounts`, :mod:`.throttle`: passwords, sessions, login throttling.

Importing this package stays light: the CLI loads it without FastAPI."""


def mount(app, store, **kw):
    """Add the ops room to a central app; returns ``require_ops`` for the report API."""
    from sync.central.ops.web import mount as _mount
    return _mount(app, store, **kw)


def demo_login(store, base_url: str) -> str:
    from sync.central.ops.web import demo_login as _demo_login
    return _demo_login(store, base_url)
