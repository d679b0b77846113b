"""Reading image files someone else handed us: `gate decode`, the ``images:``
camera, face photos (`gate verify --face`, `gate face enroll`, `gate face
calibrate`, `central issue --face-photo`). One door for all of them.

An image file is only read when it is a regular file (a symlink is resolved
and its target checked: a FIFO would hang the reader, /dev/zero would be read
until memory runs out), no larger than ``max_bytes``, and its header declares
at most ``max_pixels`` (checked before anything is decoded, so a 40000x40000
PNG or a small decompression bomb costs a few kilobytes, not gigabytes).
Everything else raises :class:`UnusableImage` with a reason an operator can
act on; callers count it as one unusable file and go on.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from gate.errors import HardwareError
from gate.i18n import _

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pbm", ".webp", ".tif", ".tiff"}
MAX_BYTES = 64 * 1024 * 1024  # a 50 MP phone JPEG is ~25 MB
MAX_PIXELS = 50_000_000  # 50 MP: every phone photo; 150 MB once decoded as BGR
MAX_SIDE = 30_000


class UnusableImage(HardwareError):
    """This file cannot be used as an image (why: in the message)."""


def _regular_file(path: Path) -> os.stat_result:
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # missing, dangling symlink, symlink loop
        raise UnusableImage(_("{file}: cannot open ({problem})").format(
            file=path, problem=getattr(e, "strerror", None) or e)) from None
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        kind = (_("a folder") if stat.S_ISDIR(st.st_mode) else _("a FIFO") if stat.S_ISFIFO(st.st_mode)
                else _("a device") if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else _("a socket"))
        if real != path.absolute():
            kind = _("{kind} (a link to {target})").format(kind=kind, target=real)
        raise UnusableImage(_("{file}: not a regular file but {kind}; give an image file").format(file=path, kind=kind))
    return st


def read_bytes(path, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, or UnusableImage.
    Opened non-blocking and re-checked on the open descriptor, so a file swapped
    for a FIFO between the check and the open cannot hang the reader."""
    path = Path(path)
    st = _regular_file(path)
    if st.st_size > max_bytes:
        raise UnusableImage(_("{file}: {size} MB is larger than the {limit} MB allowed for an image; "
                              "shrink it first").format(
            file=path, size=f"{st.st_size / 1e6:.1f}", limit=f"{max_bytes / 1e6:.0f}"))
    if st.st_size == 0:
        raise UnusableImage(_("{file}: empty file").format(file=path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnusableImage(_("{file}: cannot open ({problem})").format(file=path, problem=e.strerror or e)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnusableImage(_("{file}: not a regular file; give an image file").format(file=path))
        chunks, left = [], max_bytes + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
    except OSError as e:
        raise UnusableImage(_("{file}: cannot read ({problem})").format(file=path, problem=e.strerror or e)) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnusableImage(_("{file}: grew beyond {limit} MB while being read").format(
            file=path, limit=f"{max_bytes / 1e6:.0f}"))
    return data


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, GIF, BMP, WebP, PNM or TIFF
    header; None for a format not recognised. Reads the header only."""
    try:
        return _dimensions(data)
    except (struct.error, IndexError, ValueError):
        raise UnusableImage(_("truncated or malformed image header")) from None


def _dimensions(d: bytes) -> tuple[int, int] | None:
    if d[:8] == b"\x89PNG\r\n\x1a\n":
        if d[12:16] != b"IHDR":
            raise ValueError
        return struct.unpack(">II", d[16:24])
    if d[:2] == b"\xff\xd8":  # JPEG: walk the markers to the first SOFn
        i = 2
        while i + 4 <= len(d):
            if d[i] != 0xFF:
                raise ValueError
            marker = d[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seg = struct.unpack(">H", d[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", d[i + 5:i + 9])
                return w, h
            if marker == 0xD9 or seg < 2:
                raise ValueError
            i += 2 + seg
        raise ValueError
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", d[6:10])
    if d[:2] == b"BM":
        w, h = struct.unpack("<ii", d[18:26])
        return abs(w), abs(h)
    if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        kind = d[12:16]
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", d[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L":
            b = int.from_bytes(d[21:25], "little")
            return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
        if kind == b"VP8X":
            return int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
        raise ValueError
    if d[:1] == b"P" and d[1:2] in b"123456" and len(d) > 2:
        fields: list[int] = []
        for line in d[2:4096].split(b"\n"):
            line = line.split(b"#")[0]
            fields += [int(x) for x in line.split()]
            if len(fields) >= 2:
                return fields[0], fields[1]
        raise ValueError
    if d[:4] in (b"II*\x00", b"MM\x00*"):
        e = "<" if d[:2] == b"II" else ">"
        off = struct.unpack(e + "I", d[4:8])[0]
        n = struct.unpack(e + "H", d[off:off + 2])[0]
        size = {}
        for k in range(min(n, 512)):
            p = off + 2 + 12 * k
            tag, typ = struct.unpack(e + "HH", d[p:p + 4])
            if tag in (256, 257):
                size[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), d[p + 8:p + (10 if typ == 3 else 12)])[0]
        if len(size) == 2:
            return size[256], size[257]
        raise ValueError
    return None


def _reduction(w: int, h: int, fit: tuple[int, int] | None) -> int:
    """The largest of 1/2/4/8 that keeps the decoded image at least ``fit``."""
    if fit is None:
        return 1
    k = 1
    for f in (2, 4, 8):
        if w // f >= fit[0] and h // f >= fit[1]:
            k = f
    return k


def read_image(path, *, colour: bool = True, unchanged: bool = False, fit: tuple[int, int] | None = None,
               max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS):
    """Decode an image file that passed the checks above: BGR (``colour``),
    grey, or as stored (``unchanged``: alpha and 16-bit kept). With ``fit``
    (W, H) a large image is decoded at 1/2, 1/4 or 1/8 size when that still
    covers W x H (JPEG decodes straight to the smaller size). Raises
    UnusableImage with the reason."""
    import cv2
    import numpy as np

    path = Path(path)
    data = read_bytes(path, max_bytes=max_bytes)
    try:
        size = dimensions(data)
    except UnusableImage as e:
        raise UnusableImage(f"{path}: {e}") from None
    if size is None:
        raise UnusableImage(_("{file}: not an image this build reads (PNG, JPEG, BMP, WebP, PNM or TIFF)").format(
            file=path))
    w, h = size
    if w <= 0 or h <= 0:
        raise UnusableImage(_("{file}: the header declares {w}x{h} pixels").format(file=path, w=w, h=h))
    if w * h > max_pixels or max(w, h) > MAX_SIDE:
        raise UnusableImage(_("{file}: the header declares {w}x{h} pixels, more than the "
                              "{limit} MP allowed; shrink it first").format(
            file=path, w=w, h=h, limit=f"{max_pixels / 1e6:.0f}"))
    k = 1 if unchanged else _reduction(w, h, fit)
    if unchanged:
        flag = cv2.IMREAD_UNCHANGED
    else:
        flag = {(True, 1): cv2.IMREAD_COLOR, (True, 2): cv2.IMREAD_REDUCED_COLOR_2,
                (True, 4): cv2.IMREAD_REDUCED_COLOR_4, (True, 8): cv2.IMREAD_REDUCED_COLOR_8,
                (False, 1): cv2.IMREAD_GRAYSCALE, (False, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
                (False, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, (False, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8}[(colour, k)]
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as e:
        raise UnusableImage(_("{file}: the decoder refused it ({problem})").format(
            file=path, problem=str(e).strip().splitlines()[-1][:120])) from None
    if img is None or img.size == 0:
        raise UnusableImage(_("{file}: not an image this build can read, or a damaged file").format(file=path))
    if img.shape[0] * img.shape[1] * k * k > max_pixels * 1.01:  # the header lied
        raise UnusableImage(_("{file}: decoded larger than its header declared").format(file=path))
    return img


def image_files(folder) -> list[Path]:
    """Image files directly in ``folder`` by suffix, in name order (not yet checked)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
