"""Reading lines from files and streams a hostile party may have written: every
line is held to a fixed size however long it really is (the rest of it is read
in bounded chunks and dropped), and bytes are never decoded here, so a stray
non-UTF-8 byte or a 300 MB line costs one bad line, not the process."""

from __future__ import annotations

from typing import BinaryIO, Iterator

CHUNK = 64 * 1024


def bounded_lines(fh: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line_number, first_bytes, too_long)`` for each line of a binary
    stream, without its line ending. ``first_bytes`` is at most ``max_bytes + 1``
    bytes; ``too_long`` says the line had more than ``max_bytes`` bytes. Uses
    ``read1`` when the stream has it, so an interactive stream (a keyboard-wedge
    scanner on stdin) yields each line as soon as it arrives."""
    for lineno, raw, long_, _ in bounded_lines_more(fh, max_bytes):
        yield lineno, raw, long_


def bounded_lines_more(fh: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes, bool, bool]]:
    """:func:`bounded_lines` plus a fourth item: whether another complete line
    is already buffered. A reader that answers each line can write its answers
    in one batch and flush only when nothing more is waiting."""
    read = getattr(fh, "read1", None) or fh.read
    buf, long_, lineno = bytearray(), False, 0
    while True:
        data = read(CHUNK)
        if not data:
            break
        start = 0
        while start < len(data):
            nl = data.find(b"\n", start)
            end = len(data) if nl < 0 else nl
            room = max_bytes + 1 - len(buf)
            if room > 0:
                buf += data[start:min(end, start + room)]
            if len(buf) > max_bytes:
                long_ = True
            if nl < 0:
                break
            lineno += 1
            more = data.find(b"\n", nl + 1) >= 0
            yield lineno, bytes(buf.rstrip(b"\r") if not long_ else buf), long_, more
            buf, long_, start = bytearray(), False, nl + 1
    if buf or long_:
        yield lineno + 1, bytes(buf.rstrip(b"\r") if not long_ else buf), long_, False


def text_lines(fh: BinaryIO, max_chars: int) -> Iterator[tuple[int, str, bool]]:
    """:func:`bounded_lines` decoded as UTF-8 (an invalid byte becomes U+FFFD);
    ``too_long`` when the line has more than ``max_chars`` characters, and then
    the text is cut to ``max_chars + 1`` characters."""
    for lineno, text, long_, _ in text_lines_more(fh, max_chars):
        yield lineno, text, long_


def text_lines_more(fh: BinaryIO, max_chars: int) -> Iterator[tuple[int, str, bool, bool]]:
    """:func:`text_lines` plus whether another complete line is already buffered."""
    for lineno, raw, long_, more in bounded_lines_more(fh, 4 * max_chars):
        text = raw.decode("utf-8", "replace")
        if long_ or len(text) > max_chars:
            yield lineno, text[:max_chars + 1], True, more
        else:
            yield lineno, text, False, more
