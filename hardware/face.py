"""Face capture and encoding: dlib (the ``dlib-bin`` wheel) with the weights
shipped in ``face-recognition-models`` — the same models and steps as
``face_recognition.face_encodings`` (HOG detector, 5-point pose, ResNet
descriptor) — located with importlib, so nothing depends on ``pkg_resources``
and nothing is fetched at run time.

Only the encoding (128 floats) leaves this module; comparison against the
enrolled template happens in the decision core. Images are never stored.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

from gate.decision import FaceCapture, Sub
from gate.errors import HardwareError

AMBIGUOUS_RATIO = 0.5  # a second face at least this share of the largest one's area


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise HardwareError("face models missing: .venv/bin/pip install face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not (path / "dlib_face_recognition_resnet_model_v1.dat").exists():
        raise HardwareError(f"face model weights not found in {path}: reinstall face-recognition-models")
    return path


@dataclass(frozen=True)
class FaceBox:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)


class FaceEngine:
    """Detect (HOG by default, CNN optional), pick the face nearest the camera,
    encode. ``max_side`` downscales big images for detection only."""

    _shared: dict = {}

    def __init__(self, *, model: str = "hog", upsample: int = 0, max_side: int = 640):
        try:
            import dlib
        except ImportError:
            raise HardwareError("dlib is missing: .venv/bin/pip install dlib-bin") from None
        self.dlib = dlib
        self.model, self.upsample, self.max_side = model, upsample, max_side
        key = model
        if key not in self._shared:
            d = models_dir()
            detector = (dlib.cnn_face_detection_model_v1(str(d / "mmod_human_face_detector.dat"))
                        if model == "cnn" else dlib.get_frontal_face_detector())
            self._shared[key] = (
                detector,
                dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
                dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat")),
            )
        self.detector, self.pose, self.encoder = self._shared[key]

    def detect(self, rgb) -> list[FaceBox]:
        import cv2

        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (int(w * scale), int(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        rects = self.detector(small, self.upsample)
        if self.model == "cnn":
            rects = [r.rect for r in rects]
        boxes = [FaceBox(max(0, int(r.left() / scale)), max(0, int(r.top() / scale)),
                         min(w, int(r.right() / scale)), min(h, int(r.bottom() / scale))) for r in rects]
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def encode(self, rgb, box: FaceBox) -> tuple[float, ...]:
        rect = self.dlib.rectangle(box.left, box.top, box.right, box.bottom)
        shape = self.pose(rgb, rect)
        return tuple(self.encoder.compute_face_descriptor(rgb, shape, 1))

    def analyse(self, rgb) -> tuple[FaceCapture, FaceBox | None]:
        """The capture of one frame: the nearest face's encoding, or why not."""
        boxes = self.detect(rgb)
        if not boxes:
            return FaceCapture(None, "no face in view", Sub.NO_FACE), None
        if len(boxes) > 1 and boxes[1].area >= AMBIGUOUS_RATIO * boxes[0].area:
            return FaceCapture(None, "two faces in view: one person at a time", Sub.SEVERAL_FACES), None
        return FaceCapture(self.encode(rgb, boxes[0])), boxes[0]


def load_rgb(path: Path):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise HardwareError(f"cannot read image {path}: not a photo, or unreadable")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def capture_from_photo(path: Path, engine: FaceEngine | None = None) -> FaceCapture:
    """A photo as the captured face (``gate verify --face``, box-office tests)."""
    engine = engine or FaceEngine(upsample=1, max_side=800)
    capture, _ = engine.analyse(load_rgb(Path(path)))
    return capture


def encoding_from_photo(path: Path, engine: FaceEngine | None = None) -> tuple[float, ...]:
    """The enrolment encoding of a photo; refuses photos without exactly one clear face."""
    capture = capture_from_photo(path, engine)
    if capture.encoding is None:
        raise HardwareError(f"{path}: {capture.detail}; take a photo of the holder alone, face to the camera")
    return capture.encoding


class FaceSource:
    """The lane's face capture: reads a camera for up to ``timeout_s`` and uses
    the best frame (the largest single face). With ``liveness`` it also needs
    the face to move between frames (head movement) before it answers."""

    def __init__(self, camera, engine: FaceEngine, *, liveness: bool = False,
                 max_frames: int = 8, good_area: float = 0.04, clock=time.monotonic):
        self.camera, self.engine = camera, engine
        self.liveness = liveness
        self.max_frames = max_frames
        self.good_area = good_area  # face covers this share of the frame: good enough, stop
        self.clock = clock

    @classmethod
    def from_spec(cls, spec: str, *, liveness: bool = False) -> "FaceSource":
        from hardware.registry import open_device
        return cls(open_device("camera", spec), FaceEngine(), liveness=liveness)

    def capture(self, timeout_s: float) -> FaceCapture:
        import cv2

        deadline = self.clock() + timeout_s
        best: tuple[int, FaceCapture] | None = None
        centers: list[tuple[float, float, float]] = []
        last = FaceCapture(None, "no face in view", Sub.NO_FACE)
        frames = 0
        while self.clock() < deadline and frames < self.max_frames:
            frame = self.camera.read()
            if frame is None:
                break
            frames += 1
            img = frame.image
            rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if img.ndim == 2 else cv2.COLOR_BGR2RGB)
            cap, box = self.engine.analyse(rgb)
            if box is None:
                last = cap
                continue
            centers.append((*box.center, (box.right - box.left)))
            if best is None or box.area > best[0]:
                best = (box.area, cap)
            big = box.area >= self.good_area * rgb.shape[0] * rgb.shape[1]
            if big and (not self.liveness or _moved(centers)):
                break
        if best is None:
            return last
        if self.liveness and not _moved(centers):
            return FaceCapture(None, "liveness: no head movement seen", Sub.NOT_LIVE)
        return best[1]


def _moved(centers: list[tuple[float, float, float]]) -> bool:
    """Head movement: the face centre moved by more than 8% of its width."""
    if len(centers) < 2:
        return False
    x0, y0, w0 = centers[0]
    return any(((x - x0) ** 2 + (y - y0) ** 2) ** 0.5 > 0.08 * w0 for x, y, _ in centers[1:])
