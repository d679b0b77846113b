"""Camera sources by spec string:

- ``opencv:0`` / ``opencv:/dev/video2`` — a V4L2 device through OpenCV
- ``video:FILE`` — a video file, ends at its last frame
- ``images:DIR`` — one frame per image file, in name order, then the source ends
- ``synthetic`` — renders live wallet codes into frames (demo, dry runs)
- ``photo:FILE`` — one still photo, endlessly (a face camera for dry runs)
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path
from typing import Callable

from gate.errors import HardwareError
from hardware.ports import Frame

from hardware.imagefile import IMAGE_SUFFIXES, UnusableImage, image_files, read_image  # noqa: F401


MAX_FRAME = (1280, 960)


def frame_size(spec: str) -> tuple[int, int]:
    """``WxH`` for a lane camera, at most 1280x960 (QR version 8-9 rotating codes need the
    pixels at 20+ cm; more costs the lane more than it reads)."""
    from gate.errors import ConfigError

    w, sep, h = (spec or "").lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and 160 <= int(w) <= MAX_FRAME[0] and 120 <= int(h) <= MAX_FRAME[1]):
        raise ConfigError(f"--frame {spec!r}: give WIDTHxHEIGHT from 160x120 up to "
                          f"{MAX_FRAME[0]}x{MAX_FRAME[1]}, e.g. 640x480 or 1280x960")
    return int(w), int(h)


class OpenCvCamera:
    def __init__(self, target: str, *, width: int = 640, height: int = 480, video: bool = False):
        import cv2

        self._cv2 = cv2
        src = int(target) if target.isdigit() else target
        if video and not Path(target).exists():
            raise HardwareError(f"video file {target} not found")
        self.cap = cv2.VideoCapture(src)
        if not self.cap.isOpened():
            raise HardwareError(
                f"cannot open camera {target!r}: check the cable, the device path "
                "(ls /dev/video*) and that no other program holds it")
        self.video = video
        if not video:
            self.set_frame(width, height)
        self.index = 0

    def set_frame(self, width: int, height: int) -> None:
        """Ask the device for this frame size (a recording keeps its own)."""
        if not self.video:
            self.cap.set(self._cv2.CAP_PROP_FRAME_WIDTH, width)
            self.cap.set(self._cv2.CAP_PROP_FRAME_HEIGHT, height)

    def read(self) -> Frame | None:
        ok, img = self.cap.read()
        if not ok:
            return None
        self.index += 1
        return Frame(img, time.monotonic_ns(), self.index)

    def close(self) -> None:
        self.cap.release()


class ImageFolderCamera:
    """One frame per image file in ``folder``, in name order. A file that is not a
    usable image (a FIFO, a link to a device, too large, a decompression bomb,
    not an image) is skipped with one line on stderr and counted in ``skipped``;
    the next file follows."""

    def __init__(self, folder: str, *, log=None):
        root = Path(folder)
        if not root.is_dir():
            raise HardwareError(f"images:{folder}: not a directory")
        self.files = image_files(root)
        self.index = 0
        self.skipped: list[str] = []
        self._log = log if log is not None else (lambda line: print(line, file=sys.stderr, flush=True))

    def read(self) -> Frame | None:
        while self.index < len(self.files):
            path = self.files[self.index]
            self.index += 1
            try:
                img = read_image(path, unchanged=True)
            except UnusableImage as e:  # skip it, do not stop the lane
                self.skipped.append(str(e))
                self._log(f"images: skipped unusable file {len(self.skipped)}: {e}")
                continue
            return Frame(img, time.monotonic_ns(), self.index)
        return None

    def close(self) -> None:
        pass


class SyntheticCamera:
    """Frames of whatever the holder queue shows: ``show(fn)`` queues a holder
    whose phone draws ``fn(now)`` (a live rotating code) for ``frames`` frames;
    with nobody queued, frames show the empty lane."""

    def __init__(self, *, width: int = 640, height: int = 480, clock=None, max_idle: int | None = None,
                 perturb: str = "clean"):
        from hardware.ports import SystemClock

        self.width, self.height = width, height
        self.clock = clock or SystemClock()
        self.queue: collections.deque = collections.deque()
        self.max_idle = max_idle
        self.perturb = perturb
        self.index = 0
        self._idle = 0
        self._empty = None

    def show(self, code_at: Callable[[float], str], frames: int = 3) -> None:
        self.queue.append([code_at, frames])

    def read(self) -> Frame | None:
        from hardware.synth import phone_frame

        self.index += 1
        if self.queue:
            self._idle = 0
            item = self.queue[0]
            item[1] -= 1
            if item[1] <= 0:
                self.queue.popleft()
            text = item[0](self.clock.now())
            img = phone_frame(text, width=self.width, height=self.height, perturb=self.perturb,
                              seed=self.index)
        else:
            self._idle += 1
            if self.max_idle is not None and self._idle > self.max_idle:
                return None
            if self._empty is None:
                self._empty = phone_frame(None, width=self.width, height=self.height)
            img = self._empty
        return Frame(img, time.monotonic_ns(), self.index)

    def close(self) -> None:
        self.queue.clear()


class PhotoCamera:
    """A still photo as an endless camera (the demo's face camera; installers'
    dry runs). ``path`` can be changed between captures."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.index = 0
        self._cache: dict = {}

    def read(self) -> Frame | None:
        if self.path is None:
            return None
        img = self._cache.get(self.path)
        if img is None:
            try:
                img = self._cache[self.path] = read_image(self.path)
            except UnusableImage as e:
                raise HardwareError(f"photo:{e}") from None
        self.index += 1
        return Frame(img, time.monotonic_ns(), self.index)

    def close(self) -> None:
        pass
