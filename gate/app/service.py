"""The lane box as a systemd service: the unit (``gate service unit|install``,
``gate central service unit``), the notify protocol and the watchdog.

The notify protocol (sd_notify(3)) is one datagram of ``KEY=VALUE`` lines to the
AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a name starting with ``@`` is in the
abstract namespace). ``gate run`` sends ``READY=1`` once the lane can decide,
``STATUS=`` lines (link, last decision), ``WATCHDOG=1`` every half of
``$WATCHDOG_USEC`` — only while the decision loop is alive — and ``STOPPING=1``
on shutdown.

"Alive" is a :class:`Heartbeat` the decision loop itself keeps: it is *busy*
while it handles a frame or a code, *idle* while it waits for the next one. The
:class:`Watchdog` thread pings only when the loop is idle, or busy for less than
``stall_s`` (the longest a turnstile cycle may take: passage timeout, face
capture, and a margin). A loop stuck in a driver (a sensor that ignores its
timeout, a camera read that never returns) stops the pings; systemd kills the
process ``WatchdogSec`` later and ``Restart=on-failure`` starts it again — the
relay is held open by no one, and a restarted lane resumes any uncleared fault.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from gate.errors import ConfigError
from gate.i18n import _

UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_WATCHDOG_S = 30
STALL_MARGIN_S = 5.0


# ------------------------------------------------------------------ sd_notify


class Notifier:
    """Datagrams to ``$NOTIFY_SOCKET``; does nothing when it is not set. Sending
    never raises: a service manager that went away must not stop the lane."""

    def __init__(self, address: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = None
        self.sock = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *lines: str) -> bool:
        if self.sock is None:
            return False
        text = "\n".join(line.replace("\n", " ") for line in lines)
        try:
            self.sock.sendto(text.encode("utf-8", "replace"), self.address)
            return True
        except OSError:
            self.errors += 1
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def watchdog_interval(env: dict | None = None) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC`` (None: no watchdog asked for,
    or it is meant for another process: ``$WATCHDOG_PID``)."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


class Heartbeat:
    """What the decision loop says about itself: :meth:`busy` when it starts on a
    frame or a code, :meth:`idle` when it is done and waits for the next."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.busy_since: float | None = None
        self.beats = 0

    def busy(self) -> None:
        self.busy_since = self.clock()

    def idle(self) -> None:
        self.busy_since = None
        self.beats += 1

    def stalled_for(self) -> float:
        """Seconds the loop has been on one frame or code (0 while it waits)."""
        since = self.busy_since
        return 0.0 if since is None else max(0.0, self.clock() - since)


class Watchdog:
    """Pings ``WATCHDOG=1`` every ``interval_s`` while the heartbeat is alive, and
    keeps ``STATUS=`` current (``status()`` is asked each tick). When the loop has
    been busy for ``stall_s`` it stops pinging and says so once in STATUS."""

    def __init__(self, notifier: Notifier, heartbeat: Heartbeat, *, interval_s: float, stall_s: float,
                 status: Callable[[], str] = lambda: ""):
        self.notifier, self.heartbeat = notifier, heartbeat
        self.interval_s, self.stall_s, self.status = interval_s, stall_s, status
        self.pings = 0
        self.stalled = False
        self._stop = threading.Event()
        self._last_status: str | None = None
        self._thread = threading.Thread(target=self._run, name="gate-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self) -> None:
        stuck = self.heartbeat.stalled_for()
        if stuck >= self.stall_s:
            if not self.stalled:
                self.stalled = True
                self.notifier.send(f"STATUS=decision loop stuck for {stuck:.0f} s: watchdog pings stopped")
            return
        self.stalled = False
        lines = ["WATCHDOG=1"]
        try:
            st = self.status()
        except Exception as exc:  # a status that cannot be read is no reason to stop pinging
            st = f"status unavailable ({type(exc).__name__})"
        if st != self._last_status:
            self._last_status = st
            lines.append(f"STATUS={st}")
        if self.notifier.send(*lines):
            self.pings += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()


# ------------------------------------------------------------------ the unit


def _quote(arg: str) -> str:
    """One ExecStart= word: systemd's specifiers (%) and variables ($) escaped,
    double quotes when it has spaces or quotes (systemd.syntax(7))."""
    out = arg.replace("\\", "\\\\").replace("%", "%%").replace("$", "$$")
    if any(c in out for c in " \t\"'") or not out:
        out = '"' + out.replace('"', '\\"') + '"'
    return out


def gate_executable() -> list[str]:
    """How to start this installation's ``gate``: the script beside this Python
    (the venv's), else the one on PATH, else ``python -m gate.app.cli``."""
    here = Path(sys.executable).parent / "gate"
    if here.is_file():
        return [str(here.absolute())]
    found = shutil.which("gate")
    return [found] if found else [str(Path(sys.executable).absolute()), "-m", "gate.app.cli"]


# what a lane box needs from /dev: cameras, GPIO chips, serial relays and scanners, HID relays
DEVICES = ("char-video4linux", "char-gpiochip", "char-ttyUSB", "char-ttyACM", "char-ttyS", "char-hidraw",
           "char-usb_device")
GROUPS = ("video", "gpio", "dialout", "plugdev")


def render_unit(*, description: str, argv: list[str], data_dir: Path, user: str | None,
                watchdog_s: int | None = DEFAULT_WATCHDOG_S, devices: bool = True) -> str:
    """A hardened ``Type=notify`` unit running ``argv``, writing only to ``data_dir``."""
    data = str(data_dir.absolute())
    if any(c in data for c in "\n\r\\"):
        raise ConfigError(_("the data directory '{path}' cannot be named in a unit: choose one without "
                            "line breaks or backslashes").format(path=data))
    lines = [
        "# written by 'gate service unit' (README: Install on a lane box)",
        "[Unit]",
        f"Description={description}",
        "After=network-online.target time-sync.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=20",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(_quote(a) for a in argv),
        f"WorkingDirectory={data.replace('%', '%%')}",  # one path to the end of the line: never quoted
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if user:
        lines.append(f"User={user}")
    if watchdog_s:
        lines.append(f"WatchdogSec={watchdog_s}")
    lines += [
        "Restart=on-failure",
        "RestartSec=2",
        "TimeoutStartSec=120",
        "TimeoutStopSec=30",
        "# logs: stdout and stderr go to journald (journalctl -u UNIT)",
        "StandardOutput=journal",
        "StandardError=journal",
        "# hardening: read-only system, writable data directory only",
        "ProtectSystem=strict",
        f"ReadWritePaths={_quote(data)}",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectHostname=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "UMask=0077",
    ]
    if devices:
        lines += ["# the turnstile's hardware: cameras, GPIO, serial and HID relays, scanners",
                  "DevicePolicy=closed", *(f"DeviceAllow={d} rw" for d in DEVICES)]
        if user:
            lines.append("SupplementaryGroups=" + " ".join(GROUPS))
    else:
        lines.append("PrivateDevices=yes")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _check_run_args(data: Path, run_args: list[str], command: list[str]) -> None:
    """Parse the command now: a typo is an error here, not a service that restarts forever."""
    from gate.app.cli import build_parser

    if run_args and run_args[0] == "--":
        run_args = run_args[1:]
    if "--tui" in run_args:
        raise ConfigError(_("a service has no terminal: leave out --tui (watch it with journalctl -fu UNIT)"))
    try:
        build_parser().parse_args(["--data", str(data), *command, *run_args])
    except SystemExit:
        raise ConfigError(_("the service's arguments do not parse (see the message above): fix them and "
                            "run this again")) from None


def lane_unit(args) -> tuple[str, str]:
    """(unit name, text) for ``gate --data DIR run RUN-ARGS``."""
    data = Path(args.data).absolute()
    run_args = list(args.run_args or [])
    if run_args[:1] == ["--"]:
        run_args = run_args[1:]
    _check_run_args(data, run_args, ["run"])
    argv = [*gate_executable(), "--data", str(data), "run", *run_args]
    return args.name, render_unit(description=f"Gate lane ({data})", argv=argv, data_dir=data, user=args.user,
                                  watchdog_s=args.watchdog)


def central_unit(args) -> tuple[str, str]:
    """(unit name, text) for ``gate --data DIR central [--db URL] serve SERVE-ARGS``."""
    data = Path(args.data).absolute()
    serve_args = list(args.serve_args or [])
    if serve_args[:1] == ["--"]:
        serve_args = serve_args[1:]
    db = ["--db", args.db] if getattr(args, "db", None) else []
    _check_run_args(data, serve_args, ["central", *db, "serve"])
    argv = [*gate_executable(), "--data", str(data), "central", *db, "serve", *serve_args]
    return args.name, render_unit(description=f"Gate central ({data})", argv=argv, data_dir=data,
                                  user=args.user, watchdog_s=args.watchdog, devices=False)


def install(name: str, text: str, *, unit_dir: Path, enable: bool) -> Path:
    """Write ``unit_dir/NAME.service`` (root only), then daemon-reload and enable --now."""
    if os.geteuid() != 0:
        raise ConfigError(_("installing a service needs root: run the same command with sudo (or print the "
                            "unit with 'gate service unit' and install it yourself)"))
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / f"{name}.service"
    tmp = path.with_suffix(".service.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    if enable:
        for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", f"{name}.service"]):
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(_("{path} written, but '{command}' failed ({error}): run it by hand").format(
                    path=path, command=" ".join(cmd), error=exc)) from None
            if res.returncode != 0:
                raise ConfigError(_("{path} written, but '{command}' failed: {error}; run it by hand").format(
                    path=path, command=" ".join(cmd), error=(res.stderr or res.stdout).strip()[:300]))
    return path


# ------------------------------------------------------------------ commands


def cmd_service_unit(args) -> int:
    name, text = (central_unit if getattr(args, "central", False) else lane_unit)(args)
    print(text, end="")
    return 0


def cmd_service_install(args) -> int:
    name, text = (central_unit if getattr(args, "central", False) else lane_unit)(args)
    path = install(name, text, unit_dir=Path(args.unit_dir), enable=not args.no_enable)
    print(_("wrote {path}").format(path=path) + ("" if args.no_enable else _(
        "; enabled and started: follow it with 'journalctl -fu {name}'").format(name=name)))
    return 0


def _unit_options(q, *, default_name: str, watchdog_help: str) -> None:
    q.add_argument("--user", metavar="USER",
                   help=_("run as this user (add it to the video, gpio and dialout groups; default: root)"))
    q.add_argument("--name", default=default_name, help=_("the unit's name (default {name})").format(name=default_name))
    q.add_argument("--watchdog", type=int, default=DEFAULT_WATCHDOG_S, metavar="S",
                   help=watchdog_help.format(s=DEFAULT_WATCHDOG_S))


def register(sub) -> None:
    p = sub.add_parser("service", help=_("run the lane as a systemd service (unit, install)"),
                       description=_("Print or install a systemd unit that runs 'gate --data DIR run RUN-ARGS' "
                                   "with Type=notify, a watchdog, Restart=on-failure and a hardened sandbox."))
    ss = p.add_subparsers(dest="service_command", metavar="ACTION")
    ss.required = True
    q = ss.add_parser("unit", help=_("print the unit for 'gate run RUN-ARGS' (after --)"),
                      description=_("Print the systemd unit; give gate run's options after '--', e.g. "
                                  "gate --data /var/lib/gate service unit -- --camera opencv:0 --relay gpio:gpiochip0:17"))
    _unit_options(q, default_name="gate-lane",
                  watchdog_help=_("WatchdogSec: restart when the lane's decision loop stops answering for S seconds "
                                  "(default {s}; 0 turns it off)"))
    q.add_argument("run_args", nargs=argparse.REMAINDER, metavar="-- RUN-ARGS",
                   help=_("gate run's options"))
    q.set_defaults(func=cmd_service_unit)
    q = ss.add_parser("install", help=_("write the unit and enable it (root)"),
                      description=_("Write /etc/systemd/system/NAME.service, then systemctl daemon-reload and "
                                  "enable --now. Needs root."))
    _unit_options(q, default_name="gate-lane",
                  watchdog_help=_("WatchdogSec: restart when the lane's decision loop stops answering for S seconds "
                                  "(default {s}; 0 turns it off)"))
    q.add_argument("--unit-dir", default=str(UNIT_DIR), metavar="DIR",
                   help=_("where to write the unit (default {dir})").format(dir=UNIT_DIR))
    q.add_argument("--no-enable", action="store_true", help=_("only write the unit (no systemctl)"))
    q.add_argument("run_args", nargs=argparse.REMAINDER, metavar="-- RUN-ARGS",
                   help=_("gate run's options"))
    q.set_defaults(func=cmd_service_install)
    central = sub.choices.get("central")  # registered before this (gate.app.cli._extensions)
    if central is not None:
        for action in central._actions:
            if isinstance(action, argparse._SubParsersAction):
                register_central(action)


def register_central(cs) -> None:
    """``gate central service unit -- SERVE-ARGS``: added to the central's actions."""
    p = cs.add_parser("service", help=_("run the central as a systemd service (unit)"),
                      description=_("Print a systemd unit that runs 'gate --data DIR central serve SERVE-ARGS' "
                                  "(Type=notify, watchdog, Restart=on-failure, hardened)."))
    ss = p.add_subparsers(dest="service_command", metavar="ACTION")
    ss.required = True
    q = ss.add_parser("unit", help=_("print the unit for 'central serve SERVE-ARGS' (after --)"),
                      description=_("Print the systemd unit; give central serve's options after '--'."))
    _unit_options(q, default_name="gate-central",
                  watchdog_help=_("WatchdogSec: restart when the server's event loop stops answering for S seconds "
                                  "(default {s}; 0 turns it off)"))
    q.add_argument("serve_args", nargs=argparse.REMAINDER, metavar="-- SERVE-ARGS", help=_("central serve's options"))
    q.set_defaults(func=cmd_service_unit, central=True)
