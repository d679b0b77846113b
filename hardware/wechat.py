"""OpenCV's WeChat QR CNN (opencv-contrib's ``wechat_qrcode``: a CNN detector
and a CNN super-resolution step in front of a zxing-derived decoder) as the
lane's last resort, behind the zxing pipeline.

It reads codes the zxing passes miss (bright spots, glare, damaged and
non-compliant codes) but costs tens of milliseconds a frame, so it never runs
on the lane's thread: :class:`WeChatFallback` takes at most one frame at a
time, at most one every ``min_interval_s``, in a daemon worker thread; a frame
offered while the worker is busy or resting replaces the waiting one (the
newest picture of the holder is the best one). Its reads come back through
:meth:`drain`, which never waits. ``blocking=True`` (``gate decode``, a still
photo) runs it inline instead.

The four model files ship in this package (hardware/models/wechat_qrcode,
Apache-2.0, see the LICENSE and README there); nothing is downloaded.
"""

from __future__ import annotations

import threading
import time
from importlib import resources
from pathlib import Path

from gate.errors import HardwareError

MODEL_FILES = ("detect.prototxt", "detect.caffemodel", "sr.prototxt", "sr.caffemodel")
MIN_INTERVAL_S = 0.2  # at most 5 CNN runs a second: about one core-tenth on this box


def models_dir() -> Path:
    return Path(str(resources.files("hardware") / "models" / "wechat_qrcode"))


def available() -> str | None:
    """None when the CNN can run here, else why not (for a warning)."""
    import cv2

    if not hasattr(cv2, "wechat_qrcode_WeChatQRCode"):
        return ("this OpenCV has no wechat_qrcode module: install opencv-contrib-python-headless "
                "in place of opencv-python-headless (pip uninstall opencv-python-headless)")
    missing = [f for f in MODEL_FILES if not (models_dir() / f).is_file()]
    if missing:
        return f"WeChat model files missing in {models_dir()}: {', '.join(missing)}; reinstall the package"
    return None


def make_detector():
    import cv2

    why = available()
    if why:
        raise HardwareError(why)
    m = models_dir()
    return cv2.wechat_qrcode_WeChatQRCode(*(str(m / f) for f in MODEL_FILES))


def detect(detector, image) -> list[str]:
    """Texts the CNN reads in one frame (BGR or grey). A text that is not valid
    UTF-8 (Shift-JIS) makes OpenCV's binding raise: that frame reads nothing."""
    try:
        texts, _ = detector.detectAndDecode(image)
    except Exception:  # noqa: BLE001 - cv2.error / UnicodeDecodeError inside the binding
        return []
    return [t for t in texts if t]


class WeChatFallback:
    """The CNN in a worker: :meth:`offer` a frame the zxing passes read nothing
    in (never waits), :meth:`drain` what it has read since (never waits)."""

    def __init__(self, *, min_interval_s: float = MIN_INTERVAL_S, blocking: bool = False,
                 clock=time.monotonic, detector=None):
        self._detector = detector or make_detector()
        self.min_interval_s = min_interval_s
        self.blocking = blocking
        self.clock = clock
        self.runs = 0  # frames the CNN looked at
        self.dropped = 0  # frames offered while one was waiting (replaced) or the worker rested
        self.errors = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending = None
        self._results: list[str] = []
        self._closed = False
        self._running = False
        self._last_run = -1e18
        self._thread = None
        if not blocking:
            self._thread = threading.Thread(target=self._work, name="wechat-qr", daemon=True)
            self._thread.start()

    def offer(self, image) -> bool:
        """Hand over a frame (the caller must not modify it afterwards). True if
        the CNN will look at it; False if it was dropped (rate limit, closed)."""
        if self.blocking:
            self.runs += 1
            self._results.extend(detect(self._detector, image))
            return True
        with self._lock:
            if self._closed:
                return False
            if self._pending is not None:
                self.dropped += 1  # the older waiting frame is replaced by this one
            self._pending = image
            self._wake.notify()
        return True

    def drain(self) -> list[str]:
        with self._lock:
            out, self._results = self._results, []
        return out

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                rest = self._last_run + self.min_interval_s - self.clock()
            if rest > 0:  # rate limit: rest outside the lock; newer frames replace the waiting one
                time.sleep(rest)
            with self._lock:
                image, self._pending = self._pending, None
                if image is None:
                    continue
                self._last_run = self.clock()
                self._running = True
            try:
                texts = detect(self._detector, image)
            except Exception:  # noqa: BLE001 - the worker must outlive any frame
                texts = []
                self.errors += 1
            with self._lock:
                self.runs += 1
                self._running = False
                self._results.extend(texts)

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Tests and benches: wait until no frame is waiting or being read."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending is None and not self._running:
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._pending = None
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
