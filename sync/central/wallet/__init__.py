"""The holder's wallet: tickets delivered to phones through one-time claim links.

- :mod:`.claims`: the claim links and what they do to tickets (issue waiting
  for a holder, claim with the phone's public key, transfer, box-office
  reissue, the holder's signed status check), on the central's database
  (tables added to ``store.migrations`` like the ops room's).
- :mod:`.web`: the wallet web app under ``/wallet`` (static files from
  ``static/``, a service worker that keeps it offline) and its JSON API under
  ``/wallet/api``.

Importing this package stays light: the CLI loads it without FastAPI.
Protocol and security notes: docs/wallet.md.
"""

CLAIM_DAYS = 30                           # default life of a claim link
FACE_POLICIES = ("off", "offer", "require")  # face binding at claim


def mount(app, store, **kw):
    """Add the wallet to a central app (pages, static files, claim API)."""
    from sync.central.wallet.web import mount as _mount
    return _mount(app, store, **kw)


def demo_claim(store, event: str, base_url: str) -> str:
    """One ticket waiting for a holder, for ``gate demo``; returns the line to print."""
    from sync.central.wallet.claims import Claims
    (made,) = Claims(store).issue(event, count=1, base_url=base_url, tier="GA")
    return f"wallet   open {made['claim_url']} in a browser on this machine to put a ticket on a phone"
