"""Lane latency and decode rates. Prints figures; asserts nothing.

Per-frame latency (frame captured -> relay command) p50/p99 at 640x480 and
1280x720 through the real lane (decode, decide, durable log append, sim relay),
beside the bare decode time of the same frames by each backend called
directly; then decode success on a perturbed set, pipeline vs bare backends.

    .venv/bin/python bench/lane.py [--frames N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # after the packages

import cv2  # noqa: E402
from common import pct  # noqa: E402

from crypto.issuer import Issuer  # noqa: E402
from gate.appliance import Gate  # noqa: E402
from gate.lane import Lane  # noqa: E402
from hardware.ports import SystemClock  # noqa: E402
from hardware.qr import FramePipeline, make_decoder  # noqa: E402
from hardware.relay import SimRelay  # noqa: E402
from hardware.sensor import NoSensor  # noqa: E402
from hardware.synth import PERTURBATIONS, phone_frame  # noqa: E402




def bare(backend: str):
    if backend == "zxing":
        import zxingcpp
        fmt = zxingcpp.BarcodeFormat.QRCode
        return lambda img: [r.text for r in zxingcpp.read_barcodes(img, formats=fmt)]
    from pyzbar import pyzbar
    return lambda img: [r.data.decode() for r in pyzbar.decode(
        img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), symbols=[pyzbar.ZBarSymbol.QRCODE])]


def latency(size, n, backend, issuer, tmp):
    w, h = size
    now = time.time()
    wallets = [issuer.mint() for _ in range(n)]
    frames = [cv2.cvtColor(phone_frame(wl.code(now), width=w, height=h, seed=i), cv2.COLOR_GRAY2BGR)
              for i, wl in enumerate(wallets)]
    empty = cv2.cvtColor(phone_frame(None, width=w, height=h, seed=1), cv2.COLOR_GRAY2BGR)
    gate = Gate.init(tmp / f"g-{backend}-{w}", event=issuer.event)
    gate.trust(issuer.keyring())
    lane = Lane(gate, relay=SimRelay(), sensor=NoSensor(), clock=SystemClock())
    pipe = FramePipeline(make_decoder(backend))
    frame_ms, decode_ms, empty_ms = [], [], []
    for i, f in enumerate(frames):
        t = time.monotonic_ns()
        texts = pipe.process(f, i * 100)
        decode_ms.append((time.monotonic_ns() - t) / 1e6)
        for text in texts:
            ev = lane.submit(text, t)
            frame_ms.append(ev.frame_ms)
        t = time.monotonic_ns()
        pipe.process(empty, i * 100 + 50)
        empty_ms.append((time.monotonic_ns() - t) / 1e6)
    fn = bare(backend)
    bare_ms = []
    for f in frames:
        t = time.monotonic_ns()
        fn(f)
        bare_ms.append((time.monotonic_ns() - t) / 1e6)
    gate.close()
    return frame_ms, decode_ms, empty_ms, bare_ms


def rates(n):
    issuer = Issuer("evt-rate")
    now = time.time()
    frames = []
    for p in PERTURBATIONS:
        for i in range(n):
            code = issuer.mint().code(now)
            frames.append((code, phone_frame(code, perturb=p, seed=1000 + i)))
    out = {}
    for backend in ("zxing", "pyzbar"):
        fn = bare(backend)
        out[f"bare {backend}"] = sum(code in fn(f) for code, f in frames)
        ok = 0
        for code, f in frames:
            ok += FramePipeline(make_decoder(backend)).process(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR), 1) == [code]
        out[f"pipeline {backend}"] = ok
    return out, len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=80, help="frames per size and backend")
    ap.add_argument("--rate-frames", type=int, default=15, help="frames per perturbation for rates")
    args = ap.parse_args()
    issuer = Issuer("evt-bench")
    print("frame->relay: captured frame to relay command through the lane (decode, decide, durable")
    print("log append, relay). pipeline decode: the lane's frame stage alone (grey, ROI, decode,")
    print("de-dup) beside the backend called directly on the same frames. All in ms.")
    print(f"{'size':<10}{'backend':<8}{'hits':>5}{'relay p50':>10}{'relay p99':>10}{'pipe p50':>9}"
          f"{'bare p50':>9}{'pipe/bare':>10}{'empty pipe':>11}{'empty bare':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((640, 480), (1280, 720)):
            for backend in ("zxing", "pyzbar"):
                fm, dm, em, bm = latency(size, args.frames, backend, issuer, Path(tmp))
                fn = bare(backend)
                empty = cv2.cvtColor(phone_frame(None, width=size[0], height=size[1], seed=1), cv2.COLOR_GRAY2BGR)
                be = []
                for _ in range(30):
                    t = time.monotonic_ns()
                    fn(empty)
                    be.append((time.monotonic_ns() - t) / 1e6)
                print(f"{size[0]}x{size[1]:<5}{backend:<8}{len(fm):>5}{pct(fm, 50):>10.2f}{pct(fm, 99):>10.2f}"
                      f"{pct(dm, 50):>9.2f}{pct(bm, 50):>9.2f}{pct(dm, 50) / pct(bm, 50):>10.2f}"
                      f"{statistics.median(em):>11.2f}{statistics.median(be):>11.2f}")
    out, total = rates(args.rate_frames)
    print(f"\ndecode success on {total} perturbed 640x480 frames ({', '.join(PERTURBATIONS)}):")
    for k, v in out.items():
        print(f"  {k:<16}{v:>4}/{total}  ({100 * v / total:.0f}%)")
    print("targets: p99 frame->relay < 50 ms at 640x480 (aim < 10 ms); pipeline <= 1.3x bare decode; "
          "pipeline rate >= best bare backend")


if __name__ == "__main__":
    main()
