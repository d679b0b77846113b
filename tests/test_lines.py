"""The bounded line reader every hostile input goes through (import files,
stdin, the stdin scanner): the same lines as a plain split, whatever the
chunking, with over-long lines cut and flagged and never held whole."""

from __future__ import annotations

import io
import random

from gate.lines import bounded_lines, bounded_lines_more


def _reference(data: bytes, max_bytes: int) -> list[tuple[int, bytes, bool]]:
    out = []
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if i == len(lines) - 1 and not line:
            break
        too_long = len(line) > max_bytes
        out.append((i + 1, line[:max_bytes + 1] if too_long else line.rstrip(b"\r"), too_long))
    return out


class _Chunky(io.RawIOBase):
    """A stream that hands out random small chunks, as a pipe or a scanner does."""

    def __init__(self, data: bytes, rng: random.Random):
        self.data, self.pos, self.rng = data, 0, rng

    def read1(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos:self.pos + self.rng.randint(1, 50)]
        self.pos += len(chunk)
        return chunk


def test_lines_equal_a_plain_split_under_any_chunking():
    # Fails if a line is split or merged at a chunk boundary, a CR is kept, a
    # long line is not cut to max+1 bytes, or the last unterminated line is lost.
    rng = random.Random(20261125)
    for _ in range(3000):
        parts = [bytes(rng.choice(b"ab\r") for _ in range(rng.randint(0, 30))) for _ in range(rng.randint(0, 8))]
        data = b"\n".join(parts) + (b"\n" if rng.random() < 0.5 else b"")
        limit = rng.randint(1, 12)
        assert list(bounded_lines(_Chunky(data, rng), limit)) == _reference(data, limit), (data, limit)


def test_more_says_whether_another_whole_line_is_already_read():
    # One chunk with three lines: the first two say more is waiting, the last
    # does not (a reader flushes its answers then).
    got = [more for *_, more in bounded_lines_more(io.BytesIO(b"a\nb\nc\n"), 10)]
    assert got == [True, True, False]
