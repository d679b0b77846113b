"""QR decoding behind one port, two backends: zxing-cpp (default: about ten
times faster here and decodes more perturbed frames) and pyzbar (libzbar0).
Only QR codes are reported; other symbologies and noise are ignored."""

from __future__ import annotations

from gate.errors import HardwareError

Box = tuple[int, int, int, int]


class ZxingDecoder:
    name = "zxing"

    def __init__(self) -> None:
        import zxingcpp

        self._zx = zxingcpp
        self._formats = zxingcpp.BarcodeFormat.QRCode

    def decode(self, grey) -> list[tuple[str, Box | None]]:
        out = []
        for r in self._zx.read_barcodes(grey, formats=self._formats):
            if not r.valid:
                continue
            p = r.position
            xs = (p.top_left.x, p.top_right.x, p.bottom_left.x, p.bottom_right.x)
            ys = (p.top_left.y, p.top_right.y, p.bottom_left.y, p.bottom_right.y)
            out.append((r.text, (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))))
        return out


class PyzbarDecoder:
    name = "pyzbar"

    def __init__(self) -> None:
        try:
            from pyzbar import pyzbar
        except ImportError as exc:  # libzbar0 missing
            raise HardwareError(f"pyzbar cannot load libzbar ({exc}): apt-get install libzbar0") from None
        self._pz = pyzbar
        self._symbols = [pyzbar.ZBarSymbol.QRCODE]

    def decode(self, grey) -> list[tuple[str, Box | None]]:
        out = []
        for r in self._pz.decode(grey, symbols=self._symbols):
            try:
                text = r.data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append((text, (r.rect.left, r.rect.top, r.rect.width, r.rect.height)))
        return out


DECODERS = {"zxing": ZxingDecoder, "pyzbar": PyzbarDecoder}


def make_decoder(name: str = "zxing"):
    try:
        return DECODERS[name]()
    except KeyError:
        raise HardwareError(f"unknown decoder {name!r}: use one of {', '.join(DECODERS)}") from None


class FramePipeline:
    """Frame → grey → (region of interest) → decode → de-duplicated QR texts.

    The same text in consecutive frames is one scan. After a hit, the next
    frames are first searched in a window around the last code (a phone held
    still), falling back to the full frame.
    """

    def __init__(self, decoder, *, roi_margin: float = 0.5, repeat_frames: int = 15,
                 roi_max_area: float = 0.5):
        self.decoder = decoder
        self.roi_margin = roi_margin
        self.repeat_frames = repeat_frames
        self.roi_max_area = roi_max_area  # a crop bigger than this share of the frame does not pay
        self._last_text: str | None = None
        self._last_seen = -10**9
        self._roi: Box | None = None

    def grey(self, image):
        import cv2

        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

    def _decode(self, grey) -> list[tuple[str, Box | None]]:
        if self._roi is not None:
            x, y, w, h = self._roi
            mx, my = int(w * self.roi_margin), int(h * self.roi_margin)
            H, W = grey.shape[:2]
            x0, y0 = max(0, x - mx), max(0, y - my)
            x1, y1 = min(W, x + w + mx), min(H, y + h + my)
            self._roi = None  # one chance: a miss falls back to full frames from now on
            if (x1 - x0) * (y1 - y0) < W * H * self.roi_max_area:
                found = self.decoder.decode(grey[y0:y1, x0:x1])
                if found:
                    self._roi = self._box(found, x0, y0)
                    return [(t, None if b is None else (b[0] + x0, b[1] + y0, b[2], b[3]))
                            for t, b in found]
        found = self.decoder.decode(grey)
        self._roi = self._box(found, 0, 0)
        return found

    @staticmethod
    def _box(found, dx: int, dy: int) -> Box | None:
        if not found or found[0][1] is None:
            return None
        x, y, w, h = found[0][1]
        return (x + dx, y + dy, w, h)

    def process(self, image, index: int) -> list[str]:
        """New QR texts in this frame (already-seen ones suppressed)."""
        found = self._decode(self.grey(image))
        new = []
        for text, _box in found:
            if text == self._last_text and index - self._last_seen <= self.repeat_frames:
                self._last_seen = index
                continue
            self._last_text, self._last_seen = text, index
            new.append(text)
        return new
