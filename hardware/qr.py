"""QR decoding behind one port, two backends: zxing-cpp (default: about ten
times faster here and decodes more real photos) and pyzbar (libzbar0).
Only QR codes are reported; other symbologies and noise are ignored.

The pipeline escalates per frame: a first pass that is exactly the bare
decoder on the whole frame (so it never reads less than bare zxing-cpp), and
only when it finds nothing, retries that read codes the first pass misses on
real photos (a global binariser, the same after a median filter, shadows
lifted, highlights clipped, a local threshold, the red channel, a 2x upscale
of small frames, contrast equalisation; each measured in bench/lane.py), then
OpenCV's WeChat CNN as a rate-limited fallback in a worker thread
(hardware.wechat) that never holds up the lane. A frame that makes a decoder
throw is one failed frame, counted; it never stops the lane.
"""

from __future__ import annotations

from gate.errors import HardwareError

Box = tuple[int, int, int, int]
Found = list[tuple[str, Box | None]]

SMALL_SIDE = 400  # frames whose longer side is at most this get the 2x upscale retry
SMALL_FRAME = 640 * 480  # larger frames are first decoded at half size (region of interest)
LANE_RETRIES = 3  # retries per empty lane frame, in turn (bench/lane.py: empty-frame p99 <= 10 ms)


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

    def retries(self, grey, colour=None):
        """Second-chance passes, most productive first (bench/lane.py measures each)."""
        import cv2

        g = self._global
        # a global threshold survives uneven local contrast (wrinkled fabric, glare edges)
        yield Retry("global", lambda: self.decode(grey, binarizer=g))
        # the same after a 3x3 median: print dots and JPEG speckle inside dark modules
        yield Retry("median+global", lambda: self.decode(cv2.medianBlur(grey, 3), binarizer=g))
        # shadows: a gamma of 0.5 lifts dark regions so the local binariser sees modules there
        yield Retry("shadows", lambda: self.decode(cv2.LUT(grey, _lut("lift"))))
        # bright spots and glare: clip the highlights, stretch what is left
        yield Retry("highlights", lambda: self.decode(_clip_highlights(grey)))
        # uneven brightness: a local mean threshold over ~60 px windows
        yield Retry("local", lambda: self.decode(cv2.adaptiveThreshold(
            grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 61, 5)))
        if colour is not None and colour.ndim == 3 and colour.shape[2] >= 3:
            # coloured light or print: the red channel alone (blue/green glare, tinted codes)
            yield Retry("red", lambda: self.decode(colour[:, :, 2]))
        yield from _generic_retries(self.decode, grey)


class Retry:
    """One escalation step: ``name`` (for the bench) and the call that runs it."""

    __slots__ = ("name", "run")

    def __init__(self, name: str, run):
        self.name, self.run = name, run

    def __call__(self) -> "Found":
        return self.run()


_LUTS: dict = {}


def _lut(kind: str):
    import numpy as np

    if kind not in _LUTS:
        x = np.arange(256) / 255.0
        _LUTS[kind] = np.clip((x ** 0.5) * 255 + 0.5, 0, 255).astype(np.uint8)
    return _LUTS[kind]


def _clip_highlights(grey):
    """Clip at the 90th percentile and stretch 2nd..90th to the full range."""
    import cv2
    import numpy as np

    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel().cumsum()
    n = hist[-1]
    lo, hi = int(np.searchsorted(hist, 0.02 * n)), int(np.searchsorted(hist, 0.90 * n))
    if hi - lo < 8:
        return grey
    x = np.arange(256, dtype=np.float32)
    lut = np.clip((x - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    return cv2.LUT(grey, lut)


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

    def retries(self, grey, colour=None):
        yield from _generic_retries(self.decode, grey)


def _generic_retries(decode, grey):
    import cv2

    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))  # per call: lanes may share a process
    h, w = grey.shape[:2]
    if max(h, w) <= SMALL_SIDE:  # a small frame: modules of 1-2 px need more pixels
        yield Retry("upscale", lambda: _scaled(
            decode(cv2.resize(grey, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)), 0.5))
        # contrast equalisation: shadows, bright spots, washed-out prints
        yield Retry("clahe", lambda: decode(clahe.apply(grey)))
    else:
        # the same on a half-size copy: equalising a full textured 640x480 frame makes the
        # decoder chase every speck (~7 ms); at half size it costs ~0.6 ms
        half = (w // 2, h // 2)
        yield Retry("clahe-half", lambda: _scaled(
            decode(clahe.apply(cv2.resize(grey, half, interpolation=cv2.INTER_AREA))), 2.0))


def _scaled(found: Found, k: float) -> Found:
    return [(t, None if b is None else tuple(int(v * k) for v in b)) for t, b in found]


DECODERS = {"zxing": ZxingDecoder, "pyzbar": PyzbarDecoder}


def make_decoder(name: str = "zxing"):
    try:
        return DECODERS[name]()
    except KeyError:
        raise HardwareError(f"unknown decoder {name!r}: use one of {', '.join(DECODERS)}") from None


def lane_fallback(*, enabled: bool = True, log=None):
    """The lane's WeChat CNN worker, or None when turned off or not available
    here (then one line says why: the lane runs on the zxing passes alone)."""
    if not enabled:
        return None
    import sys

    from hardware import wechat

    why = wechat.available()
    if why:
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(f"gate: WeChat CNN fallback off: {why}")
        return None
    return wechat.WeChatFallback()


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
    """Frame → grey → (region of interest) → decode → (retries) → (fallback) →
    de-duplicated QR texts.

    The same text in consecutive frames is one scan. After a hit, the next
    frame is first searched in a window around the last code (a phone held
    still), falling back to the full frame. A frame larger than ``SMALL_FRAME``
    (a 1280x960 lane camera) is first decoded at half size, the region of
    interest found there; only when that reads nothing is the full frame
    decoded. When the full frame gives nothing, the decoder's retries run, one
    after another, until one reads a code; then ``fallback`` (the WeChat CNN
    worker) is offered the frame and its reads come back with a later frame.
    A frame whose decoding raises is counted in ``errors`` and yields nothing.
    """

    def __init__(self, decoder, *, roi_margin: float = 0.5, repeat_frames: int = 15,
                 roi_max_area: float = 0.5, retry: bool = True, fallback=None,
                 retries_per_frame: int | None = None):
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
        self.fallback = fallback
        # a still photo gets every retry; a lane camera sees the same scene many times a second,
        # so each empty frame runs the next few retries in turn (all of them within a few frames)
        self.retries_per_frame = retries_per_frame
        self._turn = 0
        self.frames = 0
        self.errors = 0  # frames lost to a decoder or image error
        self.retried = 0  # frames that needed a retry to read a code
        self.fallback_reads = 0  # texts only the fallback read
        self.last_error: str | None = None
        self._last_text: str | None = None
        self._last_seen = -10**9
        self._roi: Box | None = None
        self._roi_shape: tuple[int, ...] | None = None
        self._roi_index = -10**9
        self._index = 0

    def grey(self, image):
        return to_grey(image)

    def _roi_window(self, shape):
        """The clamped search window around the last code, or None."""
        roi, self._roi = self._roi, None  # one chance: a miss falls back to full frames from now on
        if roi is None or shape != self._roi_shape:  # the frame size changed: the old box means nothing
            return None
        if self._index - self._roi_index > 2:  # not the next frame: the phone may have moved anywhere
            return None
        x, y, w, h = roi
        H, W = shape
        mx, my = int(w * self.roi_margin), int(h * self.roi_margin)
        x0, y0 = min(max(0, x - mx), W), min(max(0, y - my), H)
        x1, y1 = max(min(W, x + w + mx), x0), max(min(H, y + h + my), y0)
        if x1 - x0 < 16 or y1 - y0 < 16 or (x1 - x0) * (y1 - y0) >= W * H * self.roi_max_area:
            return None
        return x0, y0, x1, y1

    def _crop(self, grey, win) -> Found:
        x0, y0, x1, y1 = win
        found = self.decoder.decode(grey[y0:y1, x0:x1])
        return [(t, None if b is None else (b[0] + x0, b[1] + y0, b[2], b[3])) for t, b in found]

    def _decode(self, grey, colour=None) -> Found:
        import cv2

        shape = grey.shape[:2]
        win = self._roi_window(shape)
        if win is not None:
            found = self._crop(grey, win)
            if found:
                self._keep_roi(found, shape)
                return found
        H, W = shape
        k, small, small_colour = 1.0, grey, colour
        if W * H > SMALL_FRAME:
            # a big frame: locate at half size (as cheap as a 640x480 frame); the full frame
            # only when that reads nothing (small modules: a far or dense code needs the pixels)
            k, small = 2.0, cv2.resize(grey, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
            found = _scaled(self.decoder.decode(small), k)
            if found:
                self._keep_roi(found, shape)
                return found
        found = self.decoder.decode(grey)
        if not found and self.retry:
            # retries run at the half size too: their cost stays that of a 640x480 frame
            if k != 1.0 and colour is not None:
                small_colour = cv2.resize(colour, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
            steps = (self.decoder.retries(small, small_colour) if small_colour is not None
                     else self.decoder.retries(small))
            if self.retries_per_frame:
                steps = list(steps)
                n = len(steps)
                j = self._turn % n if n else 0
                self._turn = j + self.retries_per_frame
                steps = (steps + steps)[j:j + min(self.retries_per_frame, n)]
            for attempt in steps:
                found = _scaled(attempt(), k) if k != 1.0 else attempt()
                if found:
                    self.retried += 1
                    break
        self._keep_roi(found, shape)
        return found

    def _keep_roi(self, found: Found, shape) -> None:
        if found and found[0][1] is not None:
            self._roi, self._roi_shape, self._roi_index = found[0][1], shape, self._index

    def read(self, image) -> list[str]:
        """Every QR text in this frame (no de-duplication); [] on a failed frame.
        An empty result offers the frame to the fallback (if any)."""
        self.frames += 1
        try:
            grey = self.grey(image)
            colour = image if getattr(image, "ndim", 0) == 3 and image.shape[2] >= 3 else None
            texts = [t for t, _ in self._decode(grey, colour)]
        except Exception as exc:  # noqa: BLE001 - any decoder/image failure is one failed frame
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._roi = None
            return []
        if not texts and self.fallback is not None:
            self.fallback.offer(image if colour is not None else grey)
        return texts

    def process(self, image, index: int) -> list[str]:
        """New QR texts in this frame (already-seen ones suppressed), then any the
        fallback read since the last call."""
        self._index = index
        found = self.read(image)
        if self.fallback is not None:
            late = [t for t in dict.fromkeys(self.fallback.drain()) if t not in found]
            self.fallback_reads += len(late)
            found += late
        new = []
        for text in found:
            if text == self._last_text and index - self._last_seen <= self.repeat_frames:
                self._last_seen = index
                continue
            self._last_text, self._last_seen = text, index
            new.append(text)
        return new

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.close()
