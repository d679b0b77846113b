"""QR decoding on real photographs (tests/data/qr_real: public zxing/zxing-cpp
corpora, see its PROVENANCE.md): read rate, zero misreads, every category
read, `gate run` over photos of different sizes, `gate decode`, and a decoder
that throws costing one frame, never the lane."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hardware.qr import FramePipeline, make_decoder
from hardware.synth import phone_frame
from conftest import json_lines, run_gate

REAL = Path(__file__).resolve().parent / "data" / "qr_real"
INDEX = json.loads((REAL / "index.json").read_text())
JSQR = Path(__file__).resolve().parent / "data" / "qr_jsqr"
JSQR_INDEX = json.loads((JSQR / "index.json").read_text())


def _every_photo():
    """(set, name, BGR image, expected texts) for every real photo we ship (both sets)."""
    for root, index in ((REAL, INDEX), (JSQR, JSQR_INDEX)):
        for name, entry in index.items():
            yield root.name, name, cv2.imread(str(root / name), cv2.IMREAD_COLOR), entry["texts"]


def _read_all(pipe):
    """Each photo once through one lane pipeline, far apart in frame numbers (no de-duplication)."""
    per_cat, misreads = {}, []
    for i, (name, entry) in enumerate(INDEX.items()):
        got = pipe.process(cv2.imread(str(REAL / name), cv2.IMREAD_COLOR), i * 100)
        cat = name.split("/")[0]
        per_cat[cat] = per_cat.get(cat, 0) + sum(t in got for t in entry["texts"])
        misreads += [(name, t) for t in got if t not in entry["texts"]]
    return per_cat, misreads


def test_pipeline_reads_the_real_set_with_no_misread():
    pipe = FramePipeline(make_decoder("zxing"))
    per_cat, misreads = _read_all(pipe)
    # measured here: 180 of 188 codes (bare zxing-cpp 175, WeChat CNN 161). Fails if a retry
    # is dropped or broken (the floor sits above what the first pass alone reads) ...
    assert sum(per_cat.values()) >= 178, per_cat
    # ... or if a retry (median filter, upscale, equalisation) makes a wrong text valid
    assert misreads == []
    # every kind of hard photo is read at least once; a no-code photo never yields a text
    assert all(per_cat[c] >= 1 for c in per_cat if c != "none"), per_cat
    assert per_cat["none"] == 0
    assert pipe.errors == 0 and pipe.retried >= 3  # the retries did the extra reads


def test_retries_run_only_when_the_first_pass_finds_nothing():
    calls = []

    class Counting:
        name = "counting"

        def __init__(self):
            self.inner = make_decoder("zxing")

        def decode(self, grey):
            calls.append("first")
            return self.inner.decode(grey)

        def retries(self, grey, colour=None):
            for attempt in self.inner.retries(grey, colour):
                calls.append("retry")
                yield attempt

    pipe = FramePipeline(Counting())
    code = "GT1:first-pass"
    assert pipe.process(phone_frame(code, seed=1), 1) == [code]
    # a code the first pass reads costs exactly one decode: its frame->relay time is unchanged
    assert calls == ["first"]
    calls.clear()
    # an empty frame escalates through every retry (none reads a code) after its first pass
    assert pipe.process(phone_frame(None, seed=2), 100) == []
    assert calls[-1] == "retry" and calls.count("retry") >= 3, calls


class _Flaky:
    """zxing, except that it throws on the frames listed."""
    name = "flaky"

    def __init__(self, bad):
        self.inner, self.bad, self.n = make_decoder("zxing"), bad, 0

    def decode(self, grey):
        self.n += 1
        if self.n in self.bad:
            raise RuntimeError("decoder blew up")
        return self.inner.decode(grey)


def test_a_decoder_that_raises_is_one_failed_frame():
    pipe = FramePipeline(_Flaky(bad={2}), retry=False)
    frames = [phone_frame(f"GT1:code-{i}", seed=i) for i in range(3)]
    out = [pipe.process(f, i * 100) for i, f in enumerate(frames)]
    # the throwing frame yields nothing; the frames around it still read (the lane went on)
    assert out == [["GT1:code-0"], [], ["GT1:code-2"]]
    assert pipe.errors == 1 and "decoder blew up" in pipe.last_error and pipe.frames == 3


def test_odd_frames_decode_instead_of_raising():
    code = "GT1:odd-frames"
    grey = phone_frame(code, seed=4)
    bgra = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)  # a PNG with alpha, as images: loads it
    deep = grey.astype(np.uint16) * 257  # a 16-bit PNG
    pipe = FramePipeline(make_decoder("zxing"))
    assert pipe.process(bgra, 1) == [code] and pipe.process(deep, 100) == [code]
    assert pipe.process(np.zeros((0, 0), np.uint8), 200) == [] and pipe.errors == 1


@pytest.mark.parametrize("backend", ["zxing", "pyzbar"])
def test_roi_from_a_big_frame_is_dropped_on_a_smaller_one(backend):
    big = np.full((720, 1280), 235, np.uint8)
    code = phone_frame("GT1:corner", width=320, height=320, seed=5)
    big[0:320, 960:1280] = code  # the code in the top right corner, right of any small frame
    small = phone_frame("GT1:small", width=240, height=240, seed=6)
    pipe = FramePipeline(make_decoder(backend))
    assert pipe.process(big, 1) == ["GT1:corner"] and pipe._roi is not None
    # before the fix the kept box lay outside this frame: an empty crop made both backends throw
    assert pipe.process(small, 2) == ["GT1:small"]
    assert pipe.errors == 0


def test_gate_run_over_real_photos_of_different_sizes_runs_to_the_end(tmp_path, issuer):
    frames = tmp_path / "frames"
    frames.mkdir()
    # every photo in one folder, sizes mixed (640x480, 240x240, 500x500, 77x77, ...); every
    # other photo with a code framed as a 1280x960 camera would see it, in the bottom right,
    # so a code's box kept from a big frame lies outside the small frame after it
    for i, name in enumerate(INDEX):
        img = cv2.imread(str(REAL / name), cv2.IMREAD_COLOR)
        if i % 2 == 0 and INDEX[name]["texts"]:
            h, w = img.shape[:2]
            canvas = np.full((960, 1280, 3), 128, np.uint8)
            canvas[960 - h:, 1280 - w:] = img
            img = canvas
        cv2.imwrite(str(frames / f"{i:04d}-{Path(name).stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    sizes = {cv2.imread(str(p)).shape[:2] for p in frames.iterdir()}
    assert len(sizes) > 20
    # the last frame: a real ticket, so its admission proves the lane got there
    wallet = issuer.mint()
    # a rotating code valid now (+/-15 s): the run over ~200 frames takes seconds
    cv2.imwrite(str(frames / "zzz-ticket.png"), phone_frame(wallet.code(time.time()), seed=7))
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", issuer.event)
    (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(data, "keys", "trust", str(tmp_path / "ring.json"))
    proc = run_gate(data, "run", "--camera", f"images:{frames}", "--json-events", check=False,
                    timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # no frame lost to a decoder error (the old ROI crash shows up here once errors are caught)
    assert "could not be decoded" not in proc.stderr, proc.stderr
    events = json_lines(proc.stdout)
    # the photos' codes were read and decided (rejected: not tickets); the same text in
    # neighbouring photos is one scan, so fewer events than codes
    assert len(events) >= 50
    assert events[-1]["ticket_id"] == wallet.ticket_id and events[-1]["decision"] == "accept"


def test_gate_decode_json_shape_and_an_unreadable_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    one = "screens/zx-qrcode-2-31.jpg"
    proc = run_gate(None, "decode", "--json", str(REAL / one), str(tmp_path / "broken.jpg"),
                    str(REAL / "multi"), check=False)
    # the broken file is reported by name and skipped; the others still print; exit 1
    assert proc.returncode == 1
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr
    rows = json_lines(proc.stdout)
    assert [r["image"] for r in rows] == [str(REAL / one), str(REAL / "multi" / "zx-multi-qrcode-1-1.jpg")]
    for r in rows:
        assert set(r) == {"image", "texts", "ms"}
        assert isinstance(r["ms"], float) and r["ms"] >= 0
        assert all(isinstance(t, str) for t in r["texts"])
    assert rows[0]["texts"] == INDEX[one]["texts"]  # Shift-JIS text decoded right
    assert sorted(rows[1]["texts"]) == sorted(INDEX["multi/zx-multi-qrcode-1-1.jpg"]["texts"])


def test_first_pass_reads_everything_bare_zxing_cpp_reads_on_every_real_photo():
    # Issue 23: the pipeline was worse than the bare decoder on one category. The first pass
    # is now the bare call itself, on a fresh pipeline and on one lane pipeline that saw the
    # photo before (a region of interest kept from another photo must not hide a code).
    import zxingcpp

    fmt = zxingcpp.BarcodeFormat.QRCode
    lane = FramePipeline(make_decoder("zxing"), retry=False)
    checked = 0
    for i, (_, name, img, _) in enumerate(_every_photo()):
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        bare = {r.text for r in zxingcpp.read_barcodes(grey, formats=fmt) if r.valid}
        alone = set(FramePipeline(make_decoder("zxing"), retry=False).process(img, 0))
        assert bare <= alone, (name, bare - alone)
        in_lane = set(lane.read(img))  # consecutive frames: the kept region of interest applies
        assert bare <= in_lane, (name, bare - in_lane)
        checked += len(bare)
    assert checked >= 235  # both sets: 175 + 66 codes read bare (fails if a set went missing)


def test_escalation_reads_more_than_bare_on_the_new_set_with_no_misread():
    # qr_jsqr (jsQR's photos, not zxing's): the retries read codes the first pass misses, on
    # the tuned part and on the held-out part, and no retry makes a wrong text valid
    import zxingcpp

    fmt = zxingcpp.BarcodeFormat.QRCode
    read = {"tuned": [0, 0], "heldout": [0, 0]}
    for _, name, img, texts in (p for p in _every_photo() if p[0] == "qr_jsqr"):
        part = name.split("/")[0]
        got = FramePipeline(make_decoder("zxing")).process(img, 0)
        assert set(got) <= set(texts), (name, got)
        bare = {r.text for r in zxingcpp.read_barcodes(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), formats=fmt)}
        read[part][0] += sum(t in got for t in texts)
        read[part][1] += sum(t in bare for t in texts)
    # measured: tuned 46 vs 42 bare, held-out 25 vs 24 (of 48 and 30)
    assert read["tuned"][0] >= read["tuned"][1] + 3, read
    assert read["heldout"][0] >= read["heldout"][1], read


def test_wechat_fallback_adds_held_out_reads_without_a_misread():
    # The CNN ships on (issue 23: only if it adds reads on data not tuned on). Measured:
    # held-out 28 with it, 25 without, of 30 codes.
    from hardware.wechat import WeChatFallback, make_detector

    detector = make_detector()
    with_cnn = without = 0
    for _, name, img, texts in (p for p in _every_photo() if p[1].startswith("heldout/")):
        got = FramePipeline(make_decoder("zxing"), fallback=WeChatFallback(blocking=True, detector=detector)
                            ).process(img, 0)
        assert set(got) <= set(texts), (name, got)
        with_cnn += sum(t in got for t in texts)
        without += sum(t in FramePipeline(make_decoder("zxing")).process(img, 0) for t in texts)
    assert with_cnn > without, (with_cnn, without)


class _SlowDetector:
    """A WeChat detector that takes 'long' until released (how the lane could be held up)."""

    def __init__(self, texts):
        import threading
        self.texts, self.release, self.calls = texts, threading.Event(), 0

    def detectAndDecode(self, image):
        self.calls += 1
        self.release.wait(10)
        return self.texts, None


def test_the_fallback_worker_never_holds_up_the_lane():
    from hardware.wechat import WeChatFallback

    slow = _SlowDetector(["GT1:late"])
    fb = WeChatFallback(detector=slow, min_interval_s=0.0)
    pipe = FramePipeline(make_decoder("zxing"), fallback=fb)
    empty = phone_frame(None, seed=3)
    # 50 empty frames while the CNN is stuck on the first one: every process() returns at
    # once (a blocking offer would hang here until the 10 s release), later frames replace
    # the waiting one instead of queueing up
    for i in range(50):
        assert pipe.process(empty, i) == []
    assert slow.calls == 1 and fb.dropped >= 48
    slow.release.set()
    assert fb.wait_idle(10)
    # the CNN's read arrives with the next frame, through the same de-duplication
    late = pipe.process(empty, 60)
    assert late == ["GT1:late"] and pipe.fallback_reads >= 1
    # a code the first pass reads never goes to the CNN (its frame->relay time is unchanged)
    assert fb.wait_idle(10)
    fb.drain()  # this fake reads "GT1:late" in every frame, frame 60's included
    calls = slow.calls
    assert pipe.process(phone_frame("GT1:direct", seed=4), 100) == ["GT1:direct"]
    assert fb.wait_idle(10) and slow.calls == calls
    pipe.close()


def test_gate_decode_runs_on_every_shipped_real_photo_set():
    proc = run_gate(None, "decode", "--json", str(REAL), str(JSQR), check=False, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = json_lines(proc.stdout)
    assert len(rows) == len(INDEX) + len(JSQR_INDEX)
    truth = {str(REAL / k): v["texts"] for k, v in INDEX.items()}
    truth.update({str(JSQR / k): v["texts"] for k, v in JSQR_INDEX.items()})
    assert all(set(r["texts"]) <= set(truth[r["image"]]) for r in rows)  # no misread, WeChat included
    assert sum(len(r["texts"]) for r in rows) >= 250


def test_a_big_lane_frame_is_read_at_half_size_first_and_in_full_when_needed():
    calls = []

    class Sizes:
        name = "sizes"

        def __init__(self):
            self.inner = make_decoder("zxing")

        def decode(self, grey):
            calls.append(grey.shape[:2])
            return self.inner.decode(grey)

    pipe = FramePipeline(Sizes(), retry=False)
    big = phone_frame("GT1:big-frame", width=1280, height=960, seed=8)
    assert pipe.process(big, 1) == ["GT1:big-frame"]
    assert calls == [(480, 640)]  # half size was enough: one cheap decode
    calls.clear()
    # a small dense code in a 1280x960 frame: at half size its modules are ~1 px; the full frame reads it
    canvas = np.full((960, 1280), 230, np.uint8)
    code = phone_frame("GT1:" + "x" * 200, width=150, height=150, seed=9)
    canvas[400:550, 600:750] = code
    got = pipe.process(canvas, 100)
    assert (480, 640) in calls and (960, 1280) in calls and got == ["GT1:" + "x" * 200]


def test_frame_option_is_checked():
    from gate.errors import ConfigError
    from hardware.camera import frame_size

    assert frame_size("1280x960") == (1280, 960) and frame_size("640X480") == (640, 480)
    for bad in ("1920x1080", "0x0", "big", "640x"):
        with pytest.raises(ConfigError):
            frame_size(bad)


def test_a_lane_runs_every_retry_within_a_few_empty_frames():
    # retries_per_frame bounds an empty lane frame's cost; turn by turn every step still runs
    names = []

    class Named:
        name = "named"

        def __init__(self):
            self.inner = make_decoder("zxing")

        def decode(self, grey):
            return self.inner.decode(grey)

        def retries(self, grey, colour=None):
            for r in self.inner.retries(grey, colour):
                yield type(r)(r.name, lambda r=r: names.append(r.name) or r())

    all_steps = [r.name for r in make_decoder("zxing").retries(phone_frame(None, seed=1))]
    pipe = FramePipeline(Named(), retries_per_frame=3)
    per_frame = []
    for i in range(len(all_steps)):
        names.clear()
        pipe.process(phone_frame(None, seed=1), i)
        per_frame.append(list(names))
    assert all(len(n) == 3 for n in per_frame)
    assert set(sum(per_frame, [])) == set(all_steps)  # all steps within ceil(n/3) frames
