"""Seed a pretix test instance through its ORM (runs inside pretix's own venv).

Usage: python seed.py N_POSITIONS  -> prints one JSON object: organizer, events
(a random-secret one and a pretix_sig1 one), their check-in list ids, device
initialisation tokens, a team API token (to read check-ins back), and the
secrets of the seeded positions.
"""

import json
import os
import sys
from datetime import timedelta
from decimal import Decimal

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gate_pretix_settings")
django.setup()

from django.utils.timezone import now  # noqa: E402
from django_scopes import scopes_disabled  # noqa: E402

from pretix.base.models import Device, Order, OrderPosition, Organizer  # noqa: E402
from pretix.base.models.orders import BlockedTicketSecret  # noqa: E402
from pretix.base.secrets import assign_ticket_secret  # noqa: E402


def make_event(org, slug, generator, n):
    ev = org.events.create(name=f"Show {slug}", slug=slug, date_from=now() + timedelta(hours=2), live=True,
                           currency="EUR")
    ev.settings.ticket_secret_generator = generator
    item = ev.items.create(name="GA", default_price=Decimal("10.00"), admission=True)
    quota = ev.quotas.create(name="all", size=None)
    quota.items.add(item)
    cl = ev.checkin_lists.create(name="Main entrance", all_products=True, allow_entry_after_exit=True)
    secrets = []
    for i in range(n):
        order = Order.objects.create(event=ev, email=f"h{i}@example.org", status=Order.STATUS_PAID,
                                     total=Decimal("10.00"), datetime=now(), expires=now() + timedelta(days=1),
                                     sales_channel=org.sales_channels.get(identifier="web"), locale="en")
        pos = OrderPosition.objects.create(order=order, item=item, price=Decimal("10.00"),
                                           attendee_name_parts={"_legacy": f"Holder {i}"}, positionid=1)
        secrets.append({"secret": pos.secret, "order": order.code, "position_id": pos.pk})
    extra = {}
    if generator == "pretix_sig1":
        # a reissued ticket: its old (still validly signed) secret lands on the revocation list
        pos = OrderPosition.objects.get(pk=secrets[0]["position_id"])
        extra["revoked_secret"] = pos.secret
        assign_ticket_secret(ev, pos, force_invalidate=True)
        secrets[0]["secret"] = pos.secret
        # a blocked ticket (e.g. reported stolen)
        pos = OrderPosition.objects.get(pk=secrets[1]["position_id"])
        BlockedTicketSecret.objects.create(event=ev, position=pos, secret=pos.secret, blocked=True)
        extra["blocked_secret"] = pos.secret
    return ev, cl, secrets, extra


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with scopes_disabled():
        org = Organizer.objects.create(name="Gate Test", slug="gatetest")
        team = org.teams.create(name="ops", all_events=True, all_event_permissions=True,
                                all_organizer_permissions=True)
        token = team.tokens.create(name="tests")
        out = {"organizer": org.slug, "team_token": token.token, "events": {}}
        for slug, gen in (("random", "random"), ("signed", "pretix_sig1")):
            ev, cl, secrets, extra = make_event(org, slug, gen, n)
            devices = []
            for k in range(2):
                d = Device.objects.create(organizer=org, name=f"gate-{slug}-{k}", all_events=True,
                                          security_profile="pretixscan")
                devices.append(d.initialization_token)
            out["events"][slug] = {"slug": ev.slug, "list": cl.pk, "devices": devices, "positions": secrets,
                                   **extra}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
