"""Lane latency and decode rates. Prints figures; asserts nothing.

Per-frame latency (frame captured -> relay command) p50/p99 at 640x480 and
1280x720 through the real lane (decode, decide, durable log append, sim relay),
beside the bare decode time of the same frames by each backend called
directly; then decode success on a perturbed set, pipeline vs bare backends;
then, on the real photographs in tests/data/qr_real (public sets, see its
PROVENANCE.md), a per-category table for every decoder in one run: our
pipeline (zxing, pyzbar), bare zxing-cpp, bare pyzbar, OpenCV's
QRCodeDetector and, when cv2 carries wechat_qrcode and --wechat-models DIR
holds its four model files, OpenCV's WeChat CNN.

    .venv/bin/python bench/lane.py [--frames N] [--real-only] [--wechat-models DIR]
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

REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "qr_real"


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


def real_decoders(wechat_models: str | None):
    """name -> (needs colour frame, fn(image) -> texts). Bare decoders get the grey frame."""
    import zxingcpp
    from pyzbar import pyzbar

    fmt = zxingcpp.BarcodeFormat.QRCode
    out = {}
    for backend in ("zxing", "pyzbar"):
        pipe = FramePipeline(make_decoder(backend))
        counter = iter(range(0, 10**9, 100))  # frames far apart: no de-duplication between photos
        out[f"pipeline {backend}"] = (True, lambda img, p=pipe, c=counter: p.process(img, next(c)))
    out["bare zxing-cpp"] = (False, lambda g: [r.text for r in zxingcpp.read_barcodes(g, formats=fmt) if r.valid])

    def pz(g):
        texts = []
        for r in pyzbar.decode(g, symbols=[pyzbar.ZBarSymbol.QRCODE]):
            try:
                texts.append(r.data.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        return texts
    out["bare pyzbar"] = (False, pz)
    qd = cv2.QRCodeDetector()

    def ocv(g):
        ok, texts, _, _ = qd.detectAndDecodeMulti(g)
        return [t for t in texts if t] if ok else []
    out["OpenCV QRCodeDetector"] = (False, ocv)
    if wechat_models and hasattr(cv2, "wechat_qrcode_WeChatQRCode"):
        m = Path(wechat_models)
        we = cv2.wechat_qrcode_WeChatQRCode(str(m / "detect.prototxt"), str(m / "detect.caffemodel"),
                                            str(m / "sr.prototxt"), str(m / "sr.caffemodel"))
        out["OpenCV WeChat CNN"] = (False, lambda g: list(we.detectAndDecode(g)[0]))
    elif wechat_models:
        print("(WeChat CNN skipped: this cv2 has no wechat_qrcode; it comes with opencv-contrib-python-headless)")
    return out


def real_photos(wechat_models: str | None) -> None:
    import json

    index = json.loads((REAL / "index.json").read_text())
    frames = []
    for name, entry in index.items():
        img = cv2.imread(str(REAL / name), cv2.IMREAD_COLOR)
        frames.append((name.split("/")[0], img, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), entry["texts"]))
    decoders = real_decoders(wechat_models)
    cats = sorted({c for c, *_ in frames}, key=lambda c: (c == "none", c))
    codes = {c: sum(len(t) for cc, _, _, t in frames if cc == c) for c in cats}
    stats = {}  # (decoder, category) -> [read, misread, [ms]]
    for name, (colour, fn) in decoders.items():
        fn(frames[0][1] if colour else frames[0][2])  # warm-up (model loads, first-call costs)
        for cat, img, grey, texts in frames:
            t = time.perf_counter_ns()
            try:
                got = fn(img if colour else grey)
            except Exception:  # a decoder that throws on a photo (WeChat on Shift-JIS text) reads nothing
                got = []
            ms = (time.perf_counter_ns() - t) / 1e6
            for key in ((name, cat), (name, "all")):
                st = stats.setdefault(key, [0, 0, []])
                st[0] += sum(x in got for x in texts)
                st[1] += sum(x not in texts for x in set(got))
                st[2].append(ms)
    total = sum(codes.values())
    print(f"\nreal photographs, shrunk to fit 640x480 ({len(frames)} photos, {total} codes, "
          f"{len(index) - sum(1 for f in frames if f[3])} without a code); per cell: read/misread median p99 ms")
    width = 24
    print(f"{'category':<13}{'codes':>6}" + "".join(f"{n[:width - 2]:>{width}}" for n in decoders))
    for cat in cats + ["all"]:
        n = total if cat == "all" else codes[cat]
        cells = []
        for name in decoders:
            r, m, ms = stats[(name, cat)]
            cells.append(f"{r}/{m} {statistics.median(ms):.1f} {pct(ms, 99):.1f}".rjust(width))
        print(f"{cat:<13}{n:>6}" + "".join(cells))
    print(f"\n{'decoder':<24}{'read':>6}{'misread':>9}{'median ms':>11}{'p99 ms':>8}")
    for name in decoders:
        r, m, ms = stats[(name, "all")]
        print(f"{name:<24}{r:>6}{m:>9}{statistics.median(ms):>11.1f}{pct(ms, 99):>8.1f}")
    # empty frames at lane rate: the no-code photos over and over through one pipeline (its
    # costly retry alternates), beside bare zxing-cpp on the same frames in the same run
    empties = [(img, grey) for cat, img, grey, _ in frames if cat == "none"] * 20
    if empties:
        pipe = FramePipeline(make_decoder("zxing"))
        bare_fn = decoders["bare zxing-cpp"][1]
        pm, bm, pc, bc = [], [], [], []
        for i, (img, grey) in enumerate(empties):
            t, c = time.perf_counter_ns(), time.process_time_ns()
            pipe.process(img, i)
            pm.append((time.perf_counter_ns() - t) / 1e6)
            pc.append((time.process_time_ns() - c) / 1e6)
            t, c = time.perf_counter_ns(), time.process_time_ns()
            bare_fn(grey)
            bm.append((time.perf_counter_ns() - t) / 1e6)
            bc.append((time.process_time_ns() - c) / 1e6)
        print(f"empty 640x480 photos x{len(empties)}, ms (wall clock; CPU time of the process, which the "
              f"machine's other load does not inflate):")
        for name, w, c in (("pipeline zxing", pm, pc), ("bare zxing-cpp", bm, bc)):
            print(f"  {name:<16} wall median {statistics.median(w):5.1f} p99 {pct(w, 99):5.1f}   "
                  f"cpu median {statistics.median(c):5.1f} p99 {pct(c, 99):5.1f}")
        print(f"  pipeline/bare cpu p99 {pct(pc, 99) / pct(bc, 99):.1f}x (target: pipeline p99 <= 10 ms)")
    print("targets: pipeline zxing reads more than the WeChat CNN, zero misreads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=80, help="frames per size and backend")
    ap.add_argument("--rate-frames", type=int, default=15, help="frames per perturbation for rates")
    ap.add_argument("--real-only", action="store_true", help="only the real-photograph table")
    ap.add_argument("--wechat-models", metavar="DIR",
                    help="WeChat CNN model files (detect/sr .prototxt/.caffemodel) to add it to the table")
    args = ap.parse_args()
    if args.real_only:
        real_photos(args.wechat_models)
        return
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
    real_photos(args.wechat_models)


if __name__ == "__main__":
    main()
