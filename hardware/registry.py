"""One registry of hardware drivers: spec string -> driver.

A spec is ``SCHEME[:ARG]`` (``gpio:gpiochip0:17``, ``sim:/tmp/relay.log``,
``opencv:0``). Each driver declares its kind, its scheme, the shape of its
argument, whether it is a simulated twin, and how to open it. ``gate run``,
``gate doctor`` and every ``--help`` read this table, so a new driver is one
entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs

from gate.errors import HardwareError
from gate.i18n import _

KINDS = ("camera", "relay", "sensor", "scanner", "input")


@dataclass(frozen=True, slots=True)
class Driver:
    kind: str
    scheme: str
    usage: str            # how the spec is written, e.g. "gpio:CHIP:LINE"
    help: str             # one line for --help and doctor
    open: Callable[[str], object]  # ARG (the text after "SCHEME:") -> device
    simulated: bool = False
    needs: str = ""       # an optional package the driver imports when opened


def _query(arg: str) -> tuple[str, dict[str, str]]:
    path, _sep, query = arg.partition("?")
    return path, {k: v[-1] for k, v in parse_qs(query).items()}


def _chip_line(kind: str, arg: str) -> tuple[str, int]:
    chip, _sep, line = arg.rpartition(":")
    if not chip or not line.isdigit():
        raise HardwareError(_("{kind} {spec}: use gpio:CHIP:LINE, e.g. gpio:gpiochip0:17").format(
            kind=kind, spec=f"'gpio:{arg}'"))
    return chip, int(line)


# ------------------------------------------------------------------ cameras

def _opencv(arg: str):
    from hardware.camera import OpenCvCamera
    return OpenCvCamera(arg or "0")


def _video(arg: str):
    from hardware.camera import OpenCvCamera
    if not arg:
        raise HardwareError(_("camera 'video:': give the recording, e.g. video:/data/lane.mp4"))
    return OpenCvCamera(arg, video=True)


def _images(arg: str):
    from hardware.camera import ImageFolderCamera
    if not arg:
        raise HardwareError(_("camera 'images:': give a folder, e.g. images:/data/frames"))
    return ImageFolderCamera(arg)


def _synthetic(arg: str):
    from hardware.camera import SyntheticCamera
    if arg and not arg.isdigit():
        raise HardwareError(_("camera {spec}: the argument is a number of idle frames").format(spec=f"'synthetic:{arg}'"))
    return SyntheticCamera(max_idle=int(arg) if arg else None)


def _photo(arg: str):
    from hardware.camera import PhotoCamera
    return PhotoCamera(arg or None)


# ------------------------------------------------------------------ relays

def _fault_options(kind: str, arg: str, names: tuple[str, ...]) -> tuple[str, dict[str, int]]:
    """Split the ``:NAME=N`` fault options (simulated drivers) off ``arg``, in any position."""
    parts = arg.split(":") if arg else []
    opts: dict[str, int] = {}
    for part in [p for p in parts if p.partition("=")[0] in names]:
        parts.remove(part)
        name, _sep, value = part.partition("=")
        if not value.isdigit() or int(value) < 1:
            raise HardwareError(_("{kind} {spec}: {name}=N with N a pulse/wait number from 1, e.g. sim:{name}=3").format(
                kind=kind, spec=f"'sim:{arg}'", name=name))
        opts[name.replace("-", "_")] = int(value)
    return ":".join(parts), opts


def _sim_relay(arg: str):
    from hardware.relay import SimRelay
    journal, faults = _fault_options("relay", arg, ("stuck-after", "fail-on"))
    return SimRelay(journal or None, **faults)


def _serial_relay(arg: str):
    from hardware.relay import SerialRelay
    port, q = _query(arg)
    kw: dict = {}
    try:
        if "on" in q:
            kw["on"] = bytes.fromhex(q["on"])
        if "off" in q:
            kw["off"] = bytes.fromhex(q["off"])
        if "baud" in q:
            kw["baud"] = int(q["baud"])
    except ValueError:
        raise HardwareError(_("relay {spec}: on/off must be hex bytes and baud a number").format(
            spec=f"'serial:{arg}'")) from None
    return SerialRelay(port, **kw)


def _gpio_relay(arg: str):
    from hardware.relay import GpioRelay
    return GpioRelay(*_chip_line("relay", arg))


def _hid_relay(arg: str):
    from hardware.relay import HidRelay
    if arg and not arg.isdigit():
        raise HardwareError(_("relay {spec}: the argument is the relay number on the board").format(spec=f"'hid:{arg}'"))
    return HidRelay(int(arg) if arg else 1)


# ------------------------------------------------------------------ sensors

def _no_sensor(arg: str):
    from hardware.sensor import NoSensor
    return NoSensor()


def _sim_sensor(arg: str):
    from hardware.sensor import SimSensor
    arg, faults = _fault_options("sensor", arg, ("fail-on", "hang-on"))
    parts = arg.split(":") if arg else []
    delay = 0.0
    if parts and parts[-1].startswith("delay="):  # a holder who takes S seconds to walk through
        try:
            delay = float(parts.pop()[len("delay="):])
        except ValueError:
            delay = -1.0
        if not 0.0 <= delay < 3600:
            raise HardwareError(_("sensor {spec}: delay=SECONDS, e.g. sim:1:delay=2").format(spec=f"'sim:{arg}'"))
    arg = ":".join(parts)
    if arg == "never":
        return SimSensor(0.0, delay_s=delay, **faults)
    try:
        p = float(arg) if arg else 1.0
    except ValueError:
        p = -1.0
    if not 0.0 <= p <= 1.0:
        raise HardwareError(_("sensor {spec}: use sim, sim:never or sim:P with P between 0 and 1").format(
            spec=f"'sim:{arg}'"))
    return SimSensor(p, delay_s=delay, **faults)


def _gpio_sensor(arg: str):
    from hardware.sensor import GpioSensor
    return GpioSensor(*_chip_line("sensor", arg))


def _pass_sensor(arg: str):
    from hardware.inputs import PassContactSensor
    if not arg:
        raise HardwareError(_("sensor 'pass:': give the PASS contact's input, e.g. pass:gpio:gpiochip0:22 "
                              "or pass:sim:/tmp/pass"))
    return PassContactSensor(open_device("input", arg))


# ------------------------------------------------------------------ contact inputs (PASS, fire alarm)

def _sim_input(arg: str):
    from hardware.inputs import SimInput
    if arg == "pulse":
        return SimInput(pulse=True)
    if arg.startswith("after="):
        n = arg[len("after="):]
        if not n.isdigit() or int(n) < 1:
            raise HardwareError(_("input {spec}: after=N with N a read number from 1, e.g. sim:after=3").format(
                spec=f"'sim:{arg}'"))
        return SimInput(after=int(n))
    if not arg:
        raise HardwareError(_("input 'sim:': give a file to toggle (sim:/tmp/fire, active while it holds 1), "
                              "sim:after=N or sim:pulse"))
    return SimInput(arg)


def _gpio_input(arg: str):
    from hardware.inputs import GpioInput
    active_low = arg.endswith(":active-low")
    chip, line = _chip_line("input", arg.removesuffix(":active-low"))
    return GpioInput(chip, line, active_low=active_low)


# ------------------------------------------------------------------ scanners

def _stdin_scanner(arg: str):
    from hardware.scanner import StdinScanner
    return StdinScanner()


def _serial_scanner(arg: str):
    from hardware.scanner import SerialScanner
    port, q = _query(arg)
    try:
        baud = int(q.get("baud", "9600"))
    except ValueError:
        raise HardwareError(_("scanner {spec}: baud must be a number").format(spec=f"'serial:{arg}'")) from None
    return SerialScanner(port, baud)


DRIVERS: tuple[Driver, ...] = (
    Driver("camera", "opencv", "opencv:N|DEVICE", "a camera through OpenCV", _opencv),
    Driver("camera", "video", "video:FILE", "a recording (ends with the file)", _video, simulated=True),
    Driver("camera", "images", "images:DIR", "one frame per image file, in name order", _images,
           simulated=True),
    Driver("camera", "synthetic", "synthetic[:IDLE]", "renders live wallet codes (demo, dry runs)",
           _synthetic, simulated=True),
    Driver("camera", "photo", "photo:FILE", "a still photo as an endless camera (face dry runs)",
           _photo, simulated=True),
    Driver("relay", "sim", "sim[:FILE][:stuck-after=N][:fail-on=N]",
           "simulated relay (FILE gets one line per pulse; faults: the Nth release fails and the "
           "contact stays closed / the Nth pulse fails)", _sim_relay, simulated=True),
    Driver("relay", "gpio", "gpio:CHIP:LINE", "relay on a GPIO line via libgpiod", _gpio_relay,
           needs="gpiod"),
    Driver("relay", "serial", "serial:PORT[?on=HEX&off=HEX&baud=N]", "USB serial relay board",
           _serial_relay),
    Driver("relay", "hid", "hid[:N]", "USB HID relay board 16c0:05df", _hid_relay, needs="hid"),
    Driver("sensor", "none", "none", "no passage sensor (admissions are never rolled back)", _no_sensor),
    Driver("sensor", "sim", "sim[:never|:P][:delay=S][:fail-on=N][:hang-on=N]",
           "simulated passage sensor (P: share who pass; S: seconds to walk through; "
           "faults: the Nth wait fails / never returns)",
           _sim_sensor, simulated=True),
    Driver("sensor", "gpio", "gpio:CHIP:LINE", "passage sensor on a GPIO line via libgpiod", _gpio_sensor,
           needs="gpiod"),
    Driver("sensor", "pass", "pass:INPUT", "the turnstile's PASS output (the arm turned) on a contact "
           "input, e.g. pass:gpio:gpiochip0:22", _pass_sensor),
    Driver("input", "sim", "sim:FILE|sim:after=N|sim:pulse",
           "simulated contact (active while FILE holds 1; from the Nth read on; a pulse per wait)",
           _sim_input, simulated=True),
    Driver("input", "gpio", "gpio:CHIP:LINE[:active-low]", "dry contact on a GPIO line via libgpiod",
           _gpio_input, needs="gpiod"),
    Driver("scanner", "stdin", "stdin", "keyboard-wedge scanner (one code per line)", _stdin_scanner),
    Driver("scanner", "serial", "serial:PORT[?baud=N]", "serial handheld scanner", _serial_scanner),
)


def drivers(kind: str) -> list[Driver]:
    return [d for d in DRIVERS if d.kind == kind]


def find(kind: str, spec: str) -> tuple[Driver, str]:
    """The driver for ``spec`` and its argument, or a HardwareError naming the choices."""
    scheme, _sep, arg = (spec or "").partition(":")
    for d in drivers(kind):
        if d.scheme == scheme:
            return d, arg
    raise HardwareError(_("unknown {kind} {spec}: use {usage}").format(kind=kind, spec=repr(spec), usage=usage(kind)))


def open_device(kind: str, spec: str):
    driver, arg = find(kind, spec)
    return driver.open(arg)


def is_simulated(kind: str, spec: str) -> bool:
    driver, arg = find(kind, spec)
    if kind == "sensor" and driver.scheme == "pass":  # the PASS contact is as real as its input
        return is_simulated("input", arg)
    return driver.simulated


def usage(kind: str) -> str:
    """``sim[:FILE] | gpio:CHIP:LINE | ...``: what --help shows for a kind."""
    return " | ".join(d.usage for d in drivers(kind))
