"""QR decoding behind one port, two backends: zxing-cpp (default: about ten
times faster here and decodes more real photos) and pyzbar (libzbar0).
Only QR codes are reported; other symbologies and noise are ignored.

The pipeline escalates per frame: a cheap first pass, and only when it finds
nothing, retries that read codes the first pass misses on real photos (a global
binariser, the same after a median filter, a 2x upscale of small frames,
contrast equalisation). A frame that
makes a decoder throw is one failed frame, counted; it never stops the lane.
"""

from __future__ import annotations

from gate.errors import HardwareError

Box = tuple[int, int, int, int]
Found = list[tuple[str, Box | None]]

SMALL_SIDE = 400  # frames whose longer side is at most this get the 2x upscale retry


class ZxingDecoder:
    name = "zxing"

    def __init__(self) -> None:
        import zxingcpp

        self._zx = zxingcpp
        self._formats = zxingcpp.BarcodeFormat.QRCode
        self._global = zxingcpp.Binarizer.GlobalHistogram

    def decode(self, grey, *, binarizer=None) -> Found:
        kw = {} if binarizer is None else {"binarizer": binarizer}
        out = []
        for r in self._zx.read_barcodes(grey, formats=self._formats, **kw):
            if not r.valid:
                continue
            p = r.position
            xs = (p.top_left.x, p.top_right.x, p.bottom_left.x, p.bottom_right.x)
            ys = (p.top_left.y, p.top_right.y, p.bottom_left.y, p.bottom_right.y)
            out.append((r.text, (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))))
        return out

    def retries(self, grey):
        """Second-chance passes, most productive first."""
        import cv2

        # a global threshold survives uneven local contrast (wrinkled fabric, glare edges)
        yield lambda: self.decode(grey, binarizer=self._global)
        # the same after a 3x3 median: print dots and JPEG speckle inside dark modules
        yield lambda: self.decode(cv2.medianBlur(grey, 3), binarizer=self._global)
        yield from _generic_retries(self.decode, grey)


class PyzbarDecoder:
    name = "pyzbar"

    def __init__(self) -> None:
        try:
            from pyzbar import pyzbar
        except ImportError as exc:  # libzbar0 missing
            raise HardwareError(f"pyzbar cannot load libzbar ({exc}): apt-get install libzbar0") from None
        self._pz = pyzbar
        self._symbols = [pyzbar.ZBarSymbol.QRCODE]

    def decode(self, grey) -> Found:
        out = []
        for r in self._pz.decode(grey, symbols=self._symbols):
            try:
                text = r.data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append((text, (r.rect.left, r.rect.top, r.rect.width, r.rect.height)))
        return out

    def retries(self, grey):
        yield from _generic_retries(self.decode, grey)


def _generic_retries(decode, grey):
    import cv2

    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))  # per call: lanes may share a process
    h, w = grey.shape[:2]
    if max(h, w) <= SMALL_SIDE:  # a small frame: modules of 1-2 px need more pixels
        yield lambda: _scaled(decode(cv2.resize(grey, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)), 0.5)
        # contrast equalisation: shadows, bright spots, washed-out prints
        yield lambda: decode(clahe.apply(grey))
    else:
        # the same on a half-size copy: equalising a full textured 640x480 frame makes the
        # decoder chase every speck (~7 ms); at half size it costs ~0.6 ms
        half = (w // 2, h // 2)
        yield lambda: _scaled(decode(clahe.apply(cv2.resize(grey, half, interpolation=cv2.INTER_AREA))), 2.0)


def _scaled(found: Found, k: float) -> Found:
    return [(t, None if b is None else tuple(int(v * k) for v in b)) for t, b in found]


DECODERS = {"zxing": ZxingDecoder, "pyzbar": PyzbarDecoder}


def make_decoder(name: str = "zxing"):
    try:
        return DECODERS[name]()
    except KeyError:
        raise HardwareError(f"unknown decoder {name!r}: use one of {', '.join(DECODERS)}") from None


def to_grey(image):
    """A BGR, BGRA or grey frame of any depth as 8-bit grey."""
    import cv2
    import numpy as np

    if image is None or image.size == 0:
        raise ValueError("empty frame")
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF: scale to 8 bits
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(image.max())))
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if channels == 4 else cv2.COLOR_BGR2GRAY)


class FramePipeline:
    """Frame → grey → (region of interest) → decode → (retries) → de-duplicated QR texts.

    The same text in consecutive frames is one scan. After a hit, the next
    frame is first searched in a window around the last code (a phone held
    still), falling back to the full frame. When the full frame gives nothing,
    the decoder's retries run, one after another, until one reads a code.
    A frame whose decoding raises is counted in ``errors`` and yields nothing.
    """

    def __init__(self, decoder, *, roi_margin: float = 0.5, repeat_frames: int = 15,
                 roi_max_area: float = 0.5, retry: bool = True):
        import cv2

        # OpenCV's worker threads do not pay on 640x480 frames: on a busy 2-core box each
        # parallel grey/resize/equalise step waits for a descheduled worker (measured here:
        # 8 ms median per empty frame with 2 threads, 1.9 ms with 1). Process-wide, on purpose.
        cv2.setNumThreads(1)
        self.decoder = decoder
        self.roi_margin = roi_margin
        self.repeat_frames = repeat_frames
        self.roi_max_area = roi_max_area  # a crop bigger than this share of the frame does not pay
        self.retry = retry and hasattr(decoder, "retries")
        self.frames = 0
        self.errors = 0  # frames lost to a decoder or image error
        self.retried = 0  # frames that needed a retry to read a code
        self.last_error: str | None = None
        self._last_text: str | None = None
        self._last_seen = -10**9
        self._roi: Box | None = None
        self._roi_shape: tuple[int, ...] | None = None

    def grey(self, image):
        return to_grey(image)

    def _roi_window(self, shape):
        """The clamped search window around the last code, or None."""
        roi, self._roi = self._roi, None  # one chance: a miss falls back to full frames from now on
        if roi is None or shape != self._roi_shape:  # the frame size changed: the old box means nothing
            return None
        x, y, w, h = roi
        H, W = shape
        mx, my = int(w * self.roi_margin), int(h * self.roi_margin)
        x0, y0 = min(max(0, x - mx), W), min(max(0, y - my), H)
        x1, y1 = max(min(W, x + w + mx), x0), max(min(H, y + h + my), y0)
        if x1 - x0 < 16 or y1 - y0 < 16 or (x1 - x0) * (y1 - y0) >= W * H * self.roi_max_area:
            return None
        return x0, y0, x1, y1

    def _decode(self, grey) -> Found:
        shape = grey.shape[:2]
        win = self._roi_window(shape)
        if win is not None:
            x0, y0, x1, y1 = win
            found = self.decoder.decode(grey[y0:y1, x0:x1])
            if found:
                found = [(t, None if b is None else (b[0] + x0, b[1] + y0, b[2], b[3])) for t, b in found]
                self._keep_roi(found, shape)
                return found
        found = self.decoder.decode(grey)
        if not found and self.retry:
            for attempt in self.decoder.retries(grey):
                found = attempt()
                if found:
                    self.retried += 1
                    break
        self._keep_roi(found, shape)
        return found

    def _keep_roi(self, found: Found, shape) -> None:
        if found and found[0][1] is not None:
            self._roi, self._roi_shape = found[0][1], shape

    def read(self, image) -> list[str]:
        """Every QR text in this frame (no de-duplication); [] on a failed frame."""
        self.frames += 1
        try:
            return [t for t, _ in self._decode(self.grey(image))]
        except Exception as exc:  # noqa: BLE001 - any decoder/image failure is one failed frame
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._roi = None
            return []

    def process(self, image, index: int) -> list[str]:
        """New QR texts in this frame (already-seen ones suppressed)."""
        new = []
        for text in self.read(image):
            if text == self._last_text and index - self._last_seen <= self.repeat_frames:
                self._last_seen = index
                continue
            self._last_text, self._last_seen = text, index
            new.append(text)
        return new
