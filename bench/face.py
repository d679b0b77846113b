"""Face lane latency and accuracy. Prints figures; asserts nothing.

p50/p99 of detect + encode + compare on 640x480 frames made from the shipped
photos in gate/assets/faces (the lane's settings: HOG, no upsampling), and false accepts / false
rejects over all pairs of the photos at the default tolerance (0.5).

    .venv/bin/python bench/face.py [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the packages: bench/sync.py must not shadow sync/

import cv2  # noqa: E402
from common import pct  # noqa: E402
import numpy as np  # noqa: E402

from gate.decision import face_distance  # noqa: E402
from hardware.face import FaceEngine, load_rgb  # noqa: E402

FACES = ROOT / "gate" / "assets" / "faces"
TOLERANCE = 0.5


def letterbox(rgb, w=640, h=480):
    scale = min(w / rgb.shape[1], h / rgb.shape[0])
    small = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 90, np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out




def person(stem):
    return stem.replace("_partial_face", "").rstrip("0123456789")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    t = time.perf_counter()
    engine = FaceEngine(upsample=0, max_side=640)
    print(f"models loaded in {(time.perf_counter() - t) * 1000:.0f} ms")
    frames = {p.stem: letterbox(load_rgb(p)) for p in sorted(FACES.glob("*.jpg"))}
    template = [0.0] * 128
    lat, det, enc = [], [], []
    encodings = {}
    for _ in range(args.rounds):
        for stem, f in frames.items():
            t0 = time.perf_counter()
            boxes = engine.detect(f)
            t1 = time.perf_counter()
            cap, box = engine.analyse(f) if len(boxes) != 1 else (None, boxes[0])
            if len(boxes) == 1:
                e = engine.encode(f, box)
                face_distance(template, e)
                encodings[stem] = e
            t2 = time.perf_counter()
            det.append((t1 - t0) * 1000)
            if len(boxes) == 1:
                enc.append((t2 - t1) * 1000)
                lat.append((t2 - t0) * 1000)
    print(f"640x480, HOG, upsample 0: detect+encode+compare p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms"
          f" (detect p50 {pct(det, 50):.0f} ms, encode p50 {pct(enc, 50):.0f} ms); {len(lat)} frames")
    missing = sorted(set(frames) - set(encodings))
    print(f"frames without exactly one face (not matched): {', '.join(missing) or 'none'}")
    fa = fr = same = diff = 0
    worst_same, closest_diff = 0.0, 9.0
    for a, b in itertools.combinations(sorted(encodings), 2):
        d = face_distance(encodings[a], encodings[b])
        if person(a) == person(b):
            same += 1
            worst_same = max(worst_same, d)
            fr += d > TOLERANCE
        else:
            diff += 1
            closest_diff = min(closest_diff, d)
            fa += d <= TOLERANCE
    print(f"pairs at tolerance {TOLERANCE}: {same} same-person, {diff} different-person")
    print(f"false accepts {fa}, false rejects {fr}; worst same-person distance {worst_same:.3f}, "
          f"closest different-person {closest_diff:.3f}")
    print("target: p99 < 400 ms (aim < 200 ms), zero false accepts")


if __name__ == "__main__":
    main()
