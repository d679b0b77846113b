"""Base45 (RFC 9285), strict: any character outside the alphabet, a dangling
single character or an out-of-range group is an error."""

from __future__ import annotations

import struct
import sys

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_TABLE = bytes(ALPHABET.index(chr(i)) if chr(i) in ALPHABET else 0xFF for i in range(256))


class Base45Error(ValueError):
    pass


def b45encode(data: bytes) -> str:
    out = []
    append = out.append
    n = len(data)
    for i in range(0, n - 1, 2):
        v = (data[i] << 8) | data[i + 1]
        v, c = divmod(v, 45)
        e, d = divmod(v, 45)
        append(ALPHABET[c] + ALPHABET[d] + ALPHABET[e])
    if n % 2:
        d, c = divmod(data[-1], 45)
        append(ALPHABET[c] + ALPHABET[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    try:
        vals = text.encode("ascii").translate(_TABLE)
    except UnicodeEncodeError:
        raise Base45Error("non-ASCII character in base45 text") from None
    if 0xFF in vals:
        bad = next(ch for ch in text if ch not in _INDEX)
        raise Base45Error(f"character {bad!r} is not base45")
    n = len(vals)
    rest = n % 3
    if rest == 1:
        raise Base45Error("base45 length leaves a dangling character")
    full = n - rest
    np = sys.modules.get("numpy")  # already loaded in a lane process: use it, never import it here
    if np is not None and full >= 96:
        g = np.frombuffer(vals, dtype=np.uint8, count=full).reshape(-1, 3).astype(np.uint32)
        groups = g[:, 0] + g[:, 1] * 45 + g[:, 2] * 2025
        if int(groups.max()) > 0xFFFF:
            raise Base45Error("base45 group out of range")
        out = groups.astype(">u2").tobytes()
    else:
        groups = [a + b * 45 + c * 2025 for a, b, c in zip(vals[0:full:3], vals[1:full:3], vals[2:full:3])]
        if groups and max(groups) > 0xFFFF:
            raise Base45Error("base45 group out of range")
        out = struct.pack(f">{len(groups)}H", *groups)
    if rest == 2:
        v = vals[-2] + vals[-1] * 45
        if v > 0xFF:
            raise Base45Error("base45 group out of range")
        out += bytes((v,))
    return out
