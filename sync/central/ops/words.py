"""The ops room's own words (gettext domain ``ops``), by stable code. Reason codes
use the staff UI's catalogue (gate/words.py, domain ``gate``). English source
strings with ``str.format`` fields, translated where shown (gate/i18n.py)."""

from __future__ import annotations

from gate.i18n import N_

# alerts: queries.alerts() kind -> (title, detail)
ALERT_WORDS: dict[str, tuple[str, str]] = {
    "lane_refusing": (N_("Lane refusing"), N_(
        "Lane {lane} refused {refused} of {decisions} in the last {minutes} min ({share} %; other lanes {venue} %): "
        "check its reader, its list and what the stewards tell people")),
    "lane_stalled": (N_("Lane stalled"), N_(
        "Lane {lane}: {recent} a minute in the last {minutes} min against {base} a minute in the "
        "{base_minutes} min before, while other lanes flow")),
    "gate_silent": (N_("Gate silent"), N_("Gate {gate} (lane {lane}) silent for {seconds} s while other gates scan")),
    "revoked_admitting": (N_("Revoked gate still admitting"), N_(
        "Gate {gate} was revoked but its admissions keep arriving: find the device and switch it off")),
    "double_admission": (N_("Double admission"), N_(
        "Ticket {ticket} admitted {used} times (allowed {allowed}) at {where}")),
    "device_quarantined": (N_("Gate quarantined"), N_(
        "Gate {gate} is quarantined ({why}): its admissions are not passed to other gates; "
        "release it with 'gate central device release'")),
    "shared_code": (N_("Shared code?"), N_(
        "Ticket {ticket} refused at {n} lanes within a minute ({lanes}): a copied code going round?")),
}

# "Last notable events": queries.notable() kind -> text
NOTABLE_WORDS: dict[str, str] = {
    "double_admission": N_("Double admission: ticket {ticket}… admitted {used} times, last at {gate} / {lane}"),
    "manual_admit": N_("Manual admit by {operator} at {gate} / {lane}"),
    "manual_deny": N_("Manual refusal by {operator} at {gate} / {lane}"),
    "forged": N_("Forged code refused at {gate} / {lane}"),
    "copied": N_("Copied code refused at {gate} / {lane}"),
    "cancelled_admitted": N_("Cancelled ticket {ticket}… admitted at {gate} / {lane}"),
    "control_mode": N_("{operator} set {gate} to {mode}"),
    "control_pause": N_("{operator} paused {gate}"),
    "control_resume": N_("{operator} resumed {gate}"),
    "control_pin_lockout": N_("{gate}: supervisor PIN locked after wrong tries"),
    "control_biometrics": N_("{operator} changed face checks on {gate}"),
    "control_relay_fault": N_("{gate}: turnstile relay fault"),
    "control_sensor_fault": N_("{gate}: passage sensor fault"),
    "control_store_fault": N_("{gate}: storage fault"),
    "control_fault_cleared": N_("{operator} cleared the faults of {gate}"),
    "control_fire_alarm": N_("{gate}: FIRE ALARM, turnstile opened"),
    "control_fire_alarm_end": N_("{gate}: fire alarm over"),
    "quarantined": N_("Gate {gate} quarantined: {why}"),
    "gate_dark": N_("Gate {gate} (lane {lane}) gone dark: silent {seconds} s"),
    "refused_upload": N_("Upload from {gate} refused ({what})"),
}

# refused uploads (central's problems table) -> words
PROBLEM_WORDS = {
    "bad_signature": N_("chain head not signed by this gate"),
    "broken_chain": N_("records edited or missing (chain broken)"),
    "forked_chain": N_("two different histories (chain forked)"),
    "malformed_upload": N_("unreadable upload"),
    "wrong_device": N_("records of another gate"),
    "implausible": N_("more admissions than a turnstile can pass"),
}

MODE_WORDS = {"entry": N_("entry"), "exit": N_("exit")}

# gate states (queries.gates) -> (level, icon, word)
STATE_WORDS: dict[str, tuple[str, str, str]] = {
    "ok": ("ok", "●", N_("in contact")),
    "silent": ("warn", "▲", N_("silent")),
    "dark": ("crit", "✖", N_("dark")),
    "idle": ("idle", "○", N_("doors closed")),
    "revoked": ("idle", "⊘", N_("revoked")),
    "revoked_admitting": ("crit", "✖", N_("revoked, still admitting")),
}

PAGES = (("doors", N_("Doors")), ("gates", N_("Gates")), ("alerts", N_("Alerts")), ("ticket", N_("Ticket")),
         ("reconciliation", N_("Reconciliation")))
