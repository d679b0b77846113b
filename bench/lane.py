"""Lane latency and decode rates. Prints figures; asserts nothing.

Per-frame latency (frame captured -> relay command) p50/p99 at 640x480 and
1280x960 through the real lane (decode, decide, durable log append, sim relay;
the WeChat worker on), beside the bare decode time of the same frames by each
backend called directly; decode success on a perturbed set; the cost of
--frame 1280x960 (half size first, region of interest) against a full-frame
decode; then, on the real photographs in tests/data (qr_real: zxing's corpora;
qr_jsqr: jsQR's photos, split into a tuned part and a held-out part never used
for tuning; see each PROVENANCE.md), tuned and held-out columns per category
for every decoder in one run: the pipeline with and without the WeChat CNN,
the pipeline as it was ("zxing + retry"), bare zxing-cpp, pyzbar, OpenCV's
QRCodeDetector and the WeChat CNN alone; each escalation step alone; and
empty frames at lane rate (target p99 <= 10 ms).

    .venv/bin/python bench/lane.py [--frames N] [--real-only]
"""

from __future__ import annotations

import argparse
import os
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
from hardware.qr import LANE_RETRIES, FramePipeline, ZxingDecoder, lane_fallback, make_decoder  # noqa: E402
from hardware.relay import SimRelay  # noqa: E402
from hardware.sensor import NoSensor  # noqa: E402
from hardware.synth import PERTURBATIONS, phone_frame  # noqa: E402

REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "qr_real"
JSQR = Path(__file__).resolve().parent.parent / "tests" / "data" / "qr_jsqr"


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
    # the lane as shipped: the WeChat worker takes the empty frames (zxing lanes)
    pipe = FramePipeline(make_decoder(backend), fallback=lane_fallback() if backend == "zxing" else None,
                         retries_per_frame=LANE_RETRIES)
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
    pipe.close()
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


OLD_RETRIES = {"global", "median+global", "upscale", "clahe", "clahe-half"}  # the "zxing + retry"


class RetryVariant(ZxingDecoder):
    """The pipeline as it was (global, median, upscale, CLAHE retries): issue 23's 'retry variant'."""

    def retries(self, grey, colour=None):
        return (r for r in super().retries(grey, colour) if r.name in OLD_RETRIES)


def real_decoders():
    """name -> (needs colour frame, fn(image) -> texts). Bare decoders get the grey frame."""
    import zxingcpp
    from pyzbar import pyzbar

    from hardware.wechat import WeChatFallback, detect, make_detector

    fmt = zxingcpp.BarcodeFormat.QRCode
    cnn = make_detector()
    counter = iter(range(0, 10**9, 100))  # frames far apart: no de-duplication between photos
    out = {}
    for name, pipe in (
            ("pipeline zxing + WeChat", FramePipeline(make_decoder("zxing"),
                                                      fallback=WeChatFallback(blocking=True, detector=cnn))),
            ("pipeline zxing", FramePipeline(make_decoder("zxing"))),
            ("zxing + retry (before)", FramePipeline(RetryVariant())),
            ("pipeline pyzbar", FramePipeline(make_decoder("pyzbar")))):
        out[name] = (True, lambda img, p=pipe: p.process(img, next(counter)))
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
    out["OpenCV WeChat CNN"] = (True, lambda img: detect(cnn, img))
    return out


def load_real():
    """(column, category, BGR, grey, texts): qr_real is all tuned (categories by folder);
    qr_jsqr is split into tuned/ and heldout/ by a hash of each photo, never tuned on."""
    import json

    frames = []
    for root in (REAL, JSQR):
        index = json.loads((root / "index.json").read_text())
        for name, entry in index.items():
            folder = name.split("/")[0]
            column = "held-out" if folder == "heldout" else "tuned"
            cat = f"jsqr-{folder}" if root == JSQR else folder
            img = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
            frames.append((column, cat, img, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), entry["texts"]))
    return frames


def real_photos() -> None:
    frames = load_real()
    decoders = real_decoders()
    cats = sorted({c for _, c, *_ in frames}, key=lambda c: (c.startswith("jsqr"), c == "none", c))
    rows = cats + ["all tuned", "all held-out"]

    def keys(column, cat):
        return (cat, "all tuned" if column == "tuned" else "all held-out")
    codes = {r: 0 for r in rows}
    for column, cat, _, _, texts in frames:
        for k in keys(column, cat):
            codes[k] += len(texts)
    stats = {}  # (decoder, row) -> [read, misread, [ms]]
    for name, (colour, fn) in decoders.items():
        fn(frames[0][2] if colour else frames[0][3])  # warm-up (model loads, first-call costs)
        for column, cat, img, grey, texts in frames:
            t = time.perf_counter_ns()
            try:
                got = fn(img if colour else grey)
            except Exception:  # a decoder that throws on a photo reads nothing
                got = []
            ms = (time.perf_counter_ns() - t) / 1e6
            for key in keys(column, cat):
                st = stats.setdefault((name, key), [0, 0, []])
                st[0] += sum(x in got for x in texts)
                st[1] += sum(x not in texts for x in set(got))
                st[2].append(ms)
    n_tuned = sum(1 for f in frames if f[0] == "tuned")
    print(f"\nreal photographs, shrunk to fit 640x480: {n_tuned} photos tuned on (qr_real: zxing's corpora; "
          f"qr_jsqr/tuned), {len(frames) - n_tuned} held out (qr_jsqr/heldout: never looked at while tuning)")
    print("per cell: codes read/misread; a still photo gets every retry and, with WeChat, one CNN pass")
    short = {n: n.replace("pipeline ", "pipe ").replace("OpenCV ", "")[:18] for n in decoders}
    print(f"{'category':<16}{'codes':>6}" + "".join(f"{short[n]:>19}" for n in decoders))
    for r in rows:
        print(f"{r:<16}{codes[r]:>6}" + "".join(f"{stats[(n, r)][0]}/{stats[(n, r)][1]}".rjust(19) for n in decoders))
    print(f"\n{'decoder':<26}{'tuned':>8}{'held-out':>10}{'misread':>9}{'median ms':>11}{'p99 ms':>8}")
    for n in decoders:
        t, h = stats[(n, "all tuned")], stats[(n, "all held-out")]
        ms = t[2] + h[2]
        print(f"{n:<26}{t[0]:>4}/{codes['all tuned']:<3}{h[0]:>6}/{codes['all held-out']:<3}{t[1] + h[1]:>9}"
              f"{statistics.median(ms):>11.1f}{pct(ms, 99):>8.1f}")
    techniques(frames)
    empty_frames(frames)
    print("targets (held-out): pipeline + WeChat reads more than the WeChat CNN alone and more than "
          "zxing + retry; zero misreads; empty-frame p99 <= 10 ms")


def techniques(frames) -> None:
    """Each escalation step alone, on the photos the first pass misses: codes it adds."""
    dec = make_decoder("zxing")
    gain, ms, mis = {}, {}, {}
    for column, cat, img, grey, texts in frames:
        first = {t for t, _ in dec.decode(grey)}
        for r in dec.retries(grey, img):
            t0 = time.perf_counter_ns()
            got = {t for t, _ in r()}
            ms.setdefault(r.name, []).append((time.perf_counter_ns() - t0) / 1e6)
            g = gain.setdefault(r.name, {"tuned": 0, "held-out": 0, "cats": set()})
            new = [t for t in texts if t in got and t not in first]
            g[column] += len(new)
            if new:
                g["cats"].add(cat)
            mis[r.name] = mis.get(r.name, 0) + len(got - set(texts))
    print("\neach escalation step alone, over the first pass (codes added; every photo, full frames):")
    print(f"  {'step':<15}{'tuned':>6}{'held-out':>9}{'misread':>8}{'median ms':>10}{'p99 ms':>8}  categories")
    for name, g in gain.items():
        print(f"  {name:<15}{g['tuned']:>6}{g['held-out']:>9}{mis[name]:>8}{statistics.median(ms[name]):>10.2f}"
              f"{pct(ms[name], 99):>8.2f}  {', '.join(sorted(g['cats'])) or '-'}")


def empty_frames(frames) -> None:
    """Empty frames at lane rate through the lane's pipeline (LANE_RETRIES retries in turn, then an
    offer to the WeChat worker), beside bare zxing-cpp on the same frames in the same run. The lane thread's
    CPU time excludes the worker's (thread_time); wall time includes waiting for the CPU."""
    import threading

    from hardware.qr import lane_fallback

    empties = [(img, grey) for _, cat, img, grey, _ in frames if cat == "none"] * 20
    pipe = FramePipeline(make_decoder("zxing"), fallback=lane_fallback(), retries_per_frame=LANE_RETRIES)
    import zxingcpp
    fmt = zxingcpp.BarcodeFormat.QRCode
    pm, bm, pc, bc = [], [], [], []
    for i, (img, grey) in enumerate(empties):
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        pipe.process(img, i)
        pm.append((time.perf_counter_ns() - t) / 1e6)
        pc.append((time.thread_time_ns() - c) / 1e6)
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        zxingcpp.read_barcodes(grey, formats=fmt)
        bm.append((time.perf_counter_ns() - t) / 1e6)
        bc.append((time.thread_time_ns() - c) / 1e6)
        time.sleep(0.002)  # a camera delivers frames apart; the worker runs meanwhile
    fb = pipe.fallback
    print(f"\nempty 640x480 photos x{len(empties)} at lane rate, ms (lane thread; WeChat worker "
          f"{'on: ' + str(fb.runs) + ' CNN runs, ' + str(fb.dropped) + ' frames replaced' if fb else 'off'}; "
          f"{threading.active_count()} threads):")
    for name, w, c in (("pipeline zxing", pm, pc), ("bare zxing-cpp", bm, bc)):
        print(f"  {name:<16} wall median {statistics.median(w):5.2f} p99 {pct(w, 99):5.2f}   "
              f"cpu median {statistics.median(c):5.2f} p99 {pct(c, 99):5.2f}")
    print(f"  pipeline/bare cpu p99 {pct(pc, 99) / max(pct(bc, 99), 1e-6):.1f}x (target: pipeline p99 <= 10 ms)")
    pipe.close()


def big_frames(n: int) -> None:
    """--frame 1280x960: the region of interest (half size first) against a full-frame decode."""
    import zxingcpp
    fmt = zxingcpp.BarcodeFormat.QRCode
    issuer = Issuer("evt-big")
    now = time.time()
    near = [phone_frame(issuer.mint().code(now), width=1280, height=960, seed=i) for i in range(n)]
    far = []
    for i in range(n):  # a rotating code ~25 cm away: ~150 px across in a 1280x960 frame
        canvas = phone_frame(None, width=1280, height=960, seed=500 + i)
        code = phone_frame(issuer.mint().code(now), width=170, height=170, seed=900 + i)
        canvas[400:570, 560:730] = code
        far.append(canvas)
    empty = [phone_frame(None, width=1280, height=960, seed=700 + i) for i in range(n)]
    small = [phone_frame(issuer.mint().code(now), seed=i) for i in range(n)]
    print(f"\n--frame 1280x960 (half size first, then the full frame) vs bare zxing-cpp on the full frame; "
          f"ms, {n} frames each; 640x480 for scale:")
    print(f"  {'frames':<26}{'read':>6}{'pipe p50':>10}{'pipe p99':>10}{'bare p50':>10}{'bare p99':>10}")
    for label, fr in (("640x480 code", small), ("1280x960 code near", near), ("1280x960 code far", far),
                      ("1280x960 empty", empty)):
        pm, bm, ok = [], [], 0
        for i, f in enumerate(fr):
            pipe = FramePipeline(make_decoder("zxing"), retry=label.endswith("empty"))
            t = time.perf_counter_ns()
            ok += bool(pipe.process(f, i))
            pm.append((time.perf_counter_ns() - t) / 1e6)
            t = time.perf_counter_ns()
            zxingcpp.read_barcodes(f, formats=fmt)
            bm.append((time.perf_counter_ns() - t) / 1e6)
        print(f"  {label:<26}{ok:>6}{pct(pm, 50):>10.2f}{pct(pm, 99):>10.2f}{pct(bm, 50):>10.2f}{pct(bm, 99):>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=80, help="frames per size and backend")
    ap.add_argument("--rate-frames", type=int, default=15, help="frames per perturbation for rates")
    ap.add_argument("--real-only", action="store_true", help="only the real-photograph tables")
    args = ap.parse_args()
    import platform
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"OpenCV {cv2.__version__}; load average {os.getloadavg()[0]:.1f}")
    if args.real_only:
        real_photos()
        return
    issuer = Issuer("evt-bench")
    print("frame->relay: captured frame to relay command through the lane (decode, decide, durable")
    print("log append, relay). pipeline decode: the lane's frame stage alone (grey, ROI, decode,")
    print("de-dup) beside the backend called directly on the same frames. All in ms.")
    print(f"{'size':<10}{'backend':<8}{'hits':>5}{'relay p50':>10}{'relay p99':>10}{'pipe p50':>9}"
          f"{'bare p50':>9}{'pipe/bare':>10}{'empty pipe':>11}{'empty bare':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((640, 480), (1280, 960)):
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
    big_frames(args.rate_frames * 2)
    real_photos()


if __name__ == "__main__":
    main()
