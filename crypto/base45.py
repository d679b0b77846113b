"""Base45 (RFC 9285), strict: any character outside the alphabet, a dangling
single character or an out-of-range group is an error."""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


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
        vals = [_INDEX[ch] for ch in text]
    except KeyError as exc:
        raise Base45Error(f"character {exc.args[0]!r} is not base45") from None
    n = len(vals)
    if n % 3 == 1:
        raise Base45Error("base45 length leaves a dangling character")
    out = bytearray()
    for i in range(0, n - 2, 3):
        v = vals[i] + vals[i + 1] * 45 + vals[i + 2] * 2025
        if v > 0xFFFF:
            raise Base45Error("base45 group out of range")
        out.append(v >> 8)
        out.append(v & 0xFF)
    if n % 3 == 2:
        v = vals[-2] + vals[-1] * 45
        if v > 0xFF:
            raise Base45Error("base45 group out of range")
        out.append(v)
    return bytes(out)
