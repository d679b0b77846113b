"""Face capture, quality gate, encoding and fusion: dlib (the ``dlib-bin``
wheel) with the weights shipped in ``face-recognition-models`` — the same
models and steps as ``face_recognition.face_encodings`` (HOG detector, 5- or
68-point pose, ResNet descriptor, optional re-sampling "jitters") — located
with importlib, so nothing depends on ``pkg_resources`` and nothing is fetched
at run time.

A capture is usable only if the face passes the quality gate (size, sharpness,
frontal); otherwise it says why. Several photos (enrolment) or several lane
frames (capture) are fused into one encoding: the mean of the unit-normalised
encodings, scaled back to their mean length, so it compares with the same
tolerance as a single encoding.

Only encodings (128 floats) leave this module; comparison against the enrolled
template happens in the decision core. Images are never stored.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gate.decision import FaceCapture, Sub
from gate.errors import HardwareError

AMBIGUOUS_RATIO = 0.5  # a second face at least this share of the largest one's area
FUSE_FRAMES = 2  # lane: fuse the best this-many usable frames (2 x ~130 ms keeps under 400 ms)
FUSE_BUDGET_S = 0.3  # ...but only look for more while the first good one came within this


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
    def width(self) -> int:
        return max(0, self.right - self.left)

    @property
    def area(self) -> int:
        return self.width * max(0, self.bottom - self.top)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)


@dataclass(frozen=True)
class Quality:
    """What the gate measures of one face: box width (px), sharpness (variance
    of the Laplacian of the face scaled to 128 px wide), yaw (nose offset from
    the eyes' midpoint, as a share of the eye distance: 0 = frontal) and roll
    (eye line angle, degrees)."""

    face_px: int
    sharpness: float
    yaw: float
    roll: float


@dataclass(frozen=True)
class QualityGate:
    """Limits a usable face must meet. Set from the 100 real test photos (LFW,
    tests/data/faces_real): all pass (face >= 74 px, sharpness >= 14, |yaw|
    <= 0.39, |roll| <= 27); blurred with a Gaussian of sigma 3, 95 of the 96
    still detected fall below the sharpness limit."""

    min_face_px: int = 60
    min_sharpness: float = 10.0
    max_yaw: float = 0.45
    max_roll: float = 30.0

    def reason(self, q: Quality) -> str | None:
        if q.face_px < self.min_face_px:
            return f"face too small ({q.face_px} px wide, need {self.min_face_px}): come closer to the camera"
        if q.sharpness < self.min_sharpness:
            return f"face blurred (sharpness {q.sharpness:.0f}, need {self.min_sharpness:.0f}): hold still, clean the lens"
        if abs(q.yaw) > self.max_yaw:
            return f"face turned away (yaw {q.yaw:+.2f}, limit {self.max_yaw}): look at the camera"
        if abs(q.roll) > self.max_roll:
            return f"head tilted ({q.roll:+.0f} degrees, limit {self.max_roll:.0f}): hold the head straight"
        return None


@dataclass(frozen=True)
class Analysis:
    """One image's face: the capture (encoding, or why not), its box and quality."""

    capture: FaceCapture
    box: FaceBox | None = None
    quality: Quality | None = None


class FaceEngine:
    """Detect (HOG by default, CNN optional), pick the face nearest the camera,
    gate its quality, encode. ``max_side`` downscales big images for detection
    only. ``landmarks`` 5 (default) or 68 (face_recognition's "large" model);
    ``jitters`` re-samples the face that many times and averages (slower by
    that factor). Both were measured on the shipped real set (bench/face.py):
    neither lowered the false rejects at zero false accepts, so the defaults
    are the fast ones."""

    _shared: dict = {}

    def __init__(self, *, model: str = "hog", upsample: int = 0, max_side: int = 640,
                 landmarks: int = 5, jitters: int = 1, gate: QualityGate | None = QualityGate()):
        try:
            import dlib
        except ImportError:
            raise HardwareError("dlib is missing: .venv/bin/pip install dlib-bin") from None
        if landmarks not in (5, 68):
            raise ValueError("landmarks must be 5 or 68")
        self.dlib = dlib
        self.model, self.upsample, self.max_side = model, upsample, max_side
        self.landmarks, self.jitters, self.gate = landmarks, max(1, int(jitters)), gate
        d = None
        if model not in self._shared:
            d = models_dir()
            self._shared[model] = (dlib.cnn_face_detection_model_v1(str(d / "mmod_human_face_detector.dat"))
                                   if model == "cnn" else dlib.get_frontal_face_detector())
        for key, name in (("pose5", "shape_predictor_5_face_landmarks.dat"),
                          ("pose68", "shape_predictor_68_face_landmarks.dat"),
                          ("encoder", "dlib_face_recognition_resnet_model_v1.dat")):
            if key == "pose68" and landmarks != 68 or key in self._shared:
                continue
            d = d or models_dir()
            cls = dlib.face_recognition_model_v1 if key == "encoder" else dlib.shape_predictor
            self._shared[key] = cls(str(d / name))
        self.detector = self._shared[model]
        self.pose5 = self._shared["pose5"]
        self.pose = self._shared["pose68"] if landmarks == 68 else self.pose5
        self.encoder = self._shared["encoder"]

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

    def _rect(self, box: FaceBox):
        return self.dlib.rectangle(box.left, box.top, box.right, box.bottom)

    def quality(self, rgb, box: FaceBox, shape5=None) -> Quality:
        import cv2
        import numpy as np

        shape5 = shape5 or self.pose5(rgb, self._rect(box))
        pts = [(shape5.part(i).x, shape5.part(i).y) for i in range(5)]
        a = ((pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2)
        b = ((pts[2][0] + pts[3][0]) / 2, (pts[2][1] + pts[3][1]) / 2)
        left, right = sorted((a, b))
        dx, dy = right[0] - left[0], right[1] - left[1]
        iod = math.hypot(dx, dy) or 1.0
        mid = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
        nose = pts[4]
        yaw = ((nose[0] - mid[0]) * dx + (nose[1] - mid[1]) * dy) / (iod * iod)
        roll = math.degrees(math.atan2(dy, dx))
        h, w = rgb.shape[:2]
        crop = rgb[max(0, box.top):min(h, box.bottom), max(0, box.left):min(w, box.right)]
        sharp = 0.0
        if crop.size:
            grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
            grey = cv2.resize(grey, (128, max(1, round(128 * grey.shape[0] / grey.shape[1]))),
                              interpolation=cv2.INTER_AREA)
            sharp = float(np.var(cv2.Laplacian(grey, cv2.CV_64F)))
        return Quality(box.width, round(sharp, 1), round(yaw, 3), round(roll, 1))

    def encode(self, rgb, box: FaceBox, *, jitters: int | None = None) -> tuple[float, ...]:
        shape = self.pose(rgb, self._rect(box))
        return tuple(self.encoder.compute_face_descriptor(rgb, shape, jitters or self.jitters))

    def analyse(self, rgb) -> Analysis:
        """One image: the nearest face's encoding if it passes the gate, or why not."""
        boxes = self.detect(rgb)
        if not boxes:
            return Analysis(FaceCapture(None, "no face in view", Sub.NO_FACE))
        if len(boxes) > 1 and boxes[1].area >= AMBIGUOUS_RATIO * boxes[0].area:
            return Analysis(FaceCapture(None, "two faces in view: one person at a time", Sub.SEVERAL_FACES))
        box = boxes[0]
        rect = self._rect(box)
        shape5 = self.pose5(rgb, rect)
        q = self.quality(rgb, box, shape5)
        reason = self.gate.reason(q) if self.gate else None
        if reason:
            return Analysis(FaceCapture(None, reason, Sub.POOR_CAPTURE), box, q)
        shape = shape5 if self.landmarks == 5 else self.pose(rgb, rect)
        enc = tuple(self.encoder.compute_face_descriptor(rgb, shape, self.jitters))
        return Analysis(FaceCapture(enc), box, q)


def template_trials(people: dict, encodings: dict, k: int,
                    probes: dict | None = None) -> tuple[list[float], list[float]]:
    """The enrolment protocol behind the shipped tolerance: each person enrolled
    from ``k`` consecutive photos (every rotation, fused), probed with every
    other usable photo. ``people``: name -> photo paths; ``encodings``: path ->
    (encoding or None, ...); ``probes``: the probes' encodings when they come
    from another engine setting (default: ``encodings``). Returns (genuine
    distances, impostor distances)."""
    import numpy as np

    probes = encodings if probes is None else probes
    usable = {n: [p for p in ps if encodings[p][0] is not None and probes[p][0] is not None]
              for n, ps in people.items()}
    genuine: list[float] = []
    impostor: list[float] = []
    for name, ps in usable.items():
        for i in range(len(ps)):
            enrol = {ps[(i + j) % len(ps)] for j in range(k)}
            t = np.array(fuse([encodings[p][0] for p in sorted(enrol)]))
            for who, pp in usable.items():
                for p in pp:
                    if p not in enrol:
                        (genuine if who == name else impostor).append(float(np.linalg.norm(t - np.array(probes[p][0]))))
    return genuine, impostor


def fuse(encodings: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """One encoding from several of the same face: the mean of the unit vectors,
    scaled to the mean length (so the usual tolerance applies)."""
    if not encodings:
        raise ValueError("nothing to fuse")
    if len(encodings) == 1:
        return tuple(float(x) for x in encodings[0])
    norms = [math.sqrt(sum(x * x for x in e)) or 1.0 for e in encodings]
    n = len(encodings[0])
    mean = [sum(e[i] / nm for e, nm in zip(encodings, norms)) / len(encodings) for i in range(n)]
    length = math.sqrt(sum(x * x for x in mean)) or 1.0
    scale = (sum(norms) / len(norms)) / length
    return tuple(x * scale for x in mean)


def load_rgb(path: Path):
    """A photo file as RGB, through the one image door (hardware.imagefile):
    regular files only, size and pixel caps before decoding; else HardwareError."""
    import cv2

    from hardware.imagefile import UnusableImage, read_image

    try:
        img = read_image(Path(path))
    except UnusableImage as e:
        raise HardwareError(f"cannot read image {e}") from None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def photo_engine(**kw) -> FaceEngine:
    """The engine for photos (box office, `verify --face`, calibration):
    upsampled once so small faces in big photos are found."""
    return FaceEngine(upsample=1, max_side=800, **kw)


def analyse_photo(path: Path, engine: FaceEngine | None = None) -> Analysis:
    return (engine or photo_engine()).analyse(load_rgb(Path(path)))


def capture_from_photo(path: Path, engine: FaceEngine | None = None) -> FaceCapture:
    """A photo as the captured face (``gate verify --face``, box-office tests)."""
    return analyse_photo(path, engine).capture


def encoding_from_photo(path: Path, engine: FaceEngine | None = None) -> tuple[float, ...]:
    """The enrolment encoding of a photo; refuses photos without exactly one clear face."""
    capture = capture_from_photo(path, engine)
    if capture.encoding is None:
        raise HardwareError(f"{path}: {capture.detail}; take a photo of the holder alone, face to the camera")
    return capture.encoding


ENROL_PHOTOS = 3  # the documented default enrolment (README, Faces: the operating points)


def fewer_photos_warning(n: int) -> str | None:
    """The warning for an enrolment from fewer than three photos, or None."""
    if n >= ENROL_PHOTOS:
        return None
    return (f"warning: enrolled from {n} photo{'s' if n > 1 else ''}; three photos are the normal "
            "enrolment and turn far fewer holders away at the same tolerance (README, Faces): "
            "enrol again with three photos of the holder")


def template_from_photos(paths: Sequence[Path], engine: FaceEngine | None = None) -> tuple[float, ...]:
    """The enrolment template from one or more photos of the holder (several
    make a better one: see README, Faces). Any unusable photo refuses the lot,
    naming the photo and why."""
    if not paths:
        raise HardwareError("give at least one photo of the holder")
    engine = engine or photo_engine()
    return fuse([encoding_from_photo(Path(p), engine) for p in paths])


class FaceSource:
    """The lane's face capture: reads a camera for up to ``timeout_s``, keeps
    the frames whose face passes the quality gate, and fuses the ``fuse`` best
    (sharpest) into one encoding; it stops as soon as it has them, or at the
    first usable frame once ``fuse_budget_s`` has passed (slow hardware keeps
    the face step in budget with one frame). With
    ``liveness`` it also needs the face to move between frames (head movement)
    before it answers. No usable frame: the last reason (too small, blurred...)."""

    def __init__(self, camera, engine: FaceEngine, *, liveness: bool = False,
                 max_frames: int = 8, fuse: int = FUSE_FRAMES, fuse_budget_s: float = FUSE_BUDGET_S,
                 clock=time.monotonic):
        self.camera, self.engine = camera, engine
        self.liveness = liveness
        self.max_frames = max_frames
        self.fuse = max(1, fuse)
        self.fuse_budget_s = fuse_budget_s
        self.clock = clock

    @classmethod
    def from_spec(cls, spec: str, *, liveness: bool = False) -> "FaceSource":
        from hardware.registry import open_device
        return cls(open_device("camera", spec), FaceEngine(), liveness=liveness)

    def capture(self, timeout_s: float) -> FaceCapture:
        import cv2

        start = self.clock()
        deadline = start + timeout_s
        good: list[tuple[float, tuple[float, ...]]] = []  # (sharpness, encoding)
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
            a = self.engine.analyse(rgb)
            if a.box is not None:
                centers.append((*a.box.center, a.box.width))
            if a.capture.encoding is None:
                last = a.capture
                continue
            good.append((a.quality.sharpness if a.quality else 0.0, a.capture.encoding))
            enough = len(good) >= self.fuse or self.clock() - start > self.fuse_budget_s
            if enough and (not self.liveness or _moved(centers)):
                break
        if not good:
            return last
        if self.liveness and not _moved(centers):
            return FaceCapture(None, "liveness: no head movement seen", Sub.NOT_LIVE)
        best = sorted(good, key=lambda g: g[0], reverse=True)[:self.fuse]
        return FaceCapture(fuse([e for _, e in best]))


def _moved(centers: list[tuple[float, float, float]]) -> bool:
    """Head movement: the face centre moved by more than 8% of its width."""
    if len(centers) < 2:
        return False
    x0, y0, w0 = centers[0]
    return any(((x - x0) ** 2 + (y - y0) ** 2) ** 0.5 > 0.08 * w0 for x, y, _ in centers[1:])


# ------------------------------------------------------------ calibration

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SUGGEST_MARGIN = 0.05  # below the closest different-person pair: 0.03 of safety, plus the
#                        0.02 by which multi-photo templates sat closer to other people than
#                        single photos did on the real test set (0.550 vs 0.570)


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    distance: float | None  # None: no usable face in a or b


def people_photos(folder: Path) -> dict[str, list[Path]]:
    """DIR/PERSON/*.jpg -> {PERSON: [photos]} (other files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HardwareError(f"{folder} is not a folder: give a folder with one sub-folder of photos per person")
    out = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            out[d.name] = photos
    if len(out) < 2:
        raise HardwareError(f"{folder}: need at least two person folders with photos (DIR/PERSON/*.jpg)")
    return out


def encode_photos(people: dict[str, list[Path]], engine: FaceEngine | None = None
                  ) -> dict[Path, tuple[tuple[float, ...] | None, str]]:
    """Each photo's encoding (or None) and why not."""
    engine = engine or photo_engine()
    out = {}
    for photos in people.values():
        for p in photos:
            try:
                cap = capture_from_photo(p, engine)
            except HardwareError as e:
                out[p] = (None, str(e))
                continue
            out[p] = (cap.encoding, cap.detail)
    return out


def calibration_pairs(people: dict[str, list[Path]], encodings: dict) -> list[Pair]:
    from itertools import combinations

    owner = {p: name for name, photos in people.items() for p in photos}
    pairs = []
    for a, b in combinations(sorted(owner), 2):
        ea, eb = encodings[a][0], encodings[b][0]
        dist = None if ea is None or eb is None else round(
            math.sqrt(sum((x - y) ** 2 for x, y in zip(ea, eb))), 4)
        pairs.append(Pair(str(a), str(b), owner[a] == owner[b], dist))
    return pairs


@dataclass(frozen=True)
class EnrolPair:
    """A template fused from the enrolment photos ``a`` against one photo ``b``."""

    a: tuple[str, ...]
    b: str
    same: bool
    distance: float | None  # None: no usable face in b


def enrolment_pairs(people: dict[str, list[Path]], encodings: dict, k: int) -> list[EnrolPair]:
    """Each person enrolled from ``k`` of their usable photos (every rotation of
    ``k`` consecutive ones, as :func:`template_trials`), scored against that
    person's other photos and every photo of everyone else. A person with fewer
    than ``k`` usable photos is not enrolled (their photos are still probes)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    owner = {p: name for name, photos in people.items() for p in photos}
    out: list[EnrolPair] = []
    for name, photos in people.items():
        usable = [p for p in photos if encodings[p][0] is not None]
        if len(usable) < k:
            continue
        seen: set[frozenset] = set()
        for i in range(len(usable)):
            enrol = [usable[(i + j) % len(usable)] for j in range(k)]
            if frozenset(enrol) in seen:
                continue
            seen.add(frozenset(enrol))
            t = fuse([encodings[p][0] for p in enrol])
            for b in sorted(owner):
                if b in enrol:
                    continue
                eb = encodings[b][0]
                dist = None if eb is None else round(math.sqrt(sum((x - y) ** 2 for x, y in zip(t, eb))), 4)
                out.append(EnrolPair(tuple(str(p) for p in enrol), str(b), owner[b] == name, dist))
    return out


def error_rates(pairs: Sequence[Pair], tolerance: float) -> dict:
    """False accepts (different people within tolerance) and false rejects
    (same person beyond it) among the pairs with a distance."""
    same = [p.distance for p in pairs if p.same and p.distance is not None]
    diff = [p.distance for p in pairs if not p.same and p.distance is not None]
    fa = sum(d <= tolerance for d in diff)
    fr = sum(not (d <= tolerance) for d in same)
    return {"tolerance": round(tolerance, 4), "same": len(same), "different": len(diff),
            "false_accepts": fa, "false_rejects": fr,
            "far": fa / len(diff) if diff else 0.0, "frr": fr / len(same) if same else 0.0}


def suggest_tolerance(pairs: Sequence[Pair]) -> float | None:
    """The closest different-person distance minus SUGGEST_MARGIN, to 0.01;
    None without any different-person pair."""
    diff = [p.distance for p in pairs if not p.same and p.distance is not None]
    if not diff:
        return None
    return round(min(diff) - SUGGEST_MARGIN, 2)
