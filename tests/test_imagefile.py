"""Hostile image files (issue 18 item 5) through the one image door
(hardware/imagefile.py) and every command that reads photos: a FIFO, a link to
/dev/zero, a PNG header declaring 40000x40000 pixels, a small decompression
bomb. Each is one counted line, never a hang, a crash or gigabytes of memory.
Peak memory is measured in a child process (ru_maxrss), so the test sees the
real cost of reading the file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, run_gate
from hardware.imagefile import UnusableImage, dimensions, read_image

REAL = ROOT / "tests" / "data" / "qr_real"


def _png(w: int, h: int, idat: bytes) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _bomb(side: int) -> bytes:
    """A grey PNG of side x side zero pixels: ~side^2/1000 bytes on disk."""
    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    return _png(side, side, b"".join(comp.compress(row) for _ in range(side)) + comp.flush())


@pytest.fixture()
def hostile(tmp_path):
    d = tmp_path / "hostile"
    d.mkdir()
    os.mkfifo(d / "fifo.jpg")
    (d / "zero.png").symlink_to("/dev/zero")
    (d / "huge.png").write_bytes(_png(40000, 40000, zlib.compress(b"\0" * 1000)))
    (d / "bomb.png").write_bytes(_bomb(12000))  # 144 MP of zeros in ~140 kB
    (d / "dangling.jpg").symlink_to(d / "nowhere.jpg")
    (d / "text.jpg").write_bytes(b"not a jpeg at all")
    return d


def test_each_hostile_file_is_refused_with_its_reason(hostile):
    reasons = {}
    for name in ("fifo.jpg", "zero.png", "huge.png", "bomb.png", "dangling.jpg", "text.jpg"):
        with pytest.raises(UnusableImage) as e:
            read_image(hostile / name)
        reasons[name] = str(e.value)
    assert "FIFO" in reasons["fifo.jpg"]  # before the fix: open() blocked forever
    assert "device" in reasons["zero.png"] and "/dev/zero" in reasons["zero.png"]
    assert "40000x40000" in reasons["huge.png"] and "50 MP" in reasons["huge.png"]
    assert "12000x12000" in reasons["bomb.png"]
    assert "cannot open" in reasons["dangling.jpg"]
    assert "not an image" in reasons["text.jpg"]


def test_headers_are_read_without_decoding(tmp_path):
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".ppm", ".tif", ".pgm"):
        ok, buf = cv2.imencode(ext, img if ext != ".pgm" else img[:, :, 0])
        assert ok
        # a reference per format: the header parser against what OpenCV decodes
        assert dimensions(buf.tobytes()) == (53, 37), ext
    with pytest.raises(UnusableImage):
        dimensions(b"\x89PNG\r\n\x1a\n" + b"\0" * 4)  # truncated header


def _peak_rss_mb(code: str) -> float:
    # VmHWM is this process image's own peak: ru_maxrss carries over the peak of the
    # process it was forked from (a pytest worker grown by earlier tests) across exec
    probe = (code + "\nprint([int(ln.split()[1]) for ln in open('/proc/self/status')"
             " if ln.startswith('VmHWM')][0] / 1024)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


def test_a_decompression_bomb_costs_megabytes_not_gigabytes(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bomb(12000))
    baseline = _peak_rss_mb("import cv2, numpy\nfrom hardware.imagefile import read_image")
    refused = _peak_rss_mb(
        "import cv2, numpy\nfrom hardware.imagefile import read_image, UnusableImage\n"
        f"try:\n    read_image({str(bomb)!r})\nexcept UnusableImage:\n    pass")
    # decoded as BGR this file is 432 MB (grey + colour copies: more); refused from its header
    assert refused - baseline < 30, (baseline, refused)
    # what the cap saves: OpenCV decoding the same bytes directly (the old path)
    direct = _peak_rss_mb(f"import cv2\ncv2.imread({str(bomb)!r}, cv2.IMREAD_COLOR)")
    assert direct - baseline > 300, (baseline, direct)


def test_gate_decode_counts_hostile_files_and_reads_the_rest(hostile):
    good = REAL / "screens" / "zx-qrcode-2-31.jpg"
    proc = run_gate(None, "decode", "--json", "--no-wechat", str(hostile), str(good), check=False, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if str(hostile) in ln]
    assert len(lines) == 6  # one line per unusable file, each naming it
    assert "6 file(s) could not be used" in proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(good)] and rows[0]["texts"]


def test_images_camera_skips_hostile_files_and_reaches_the_last_frame(hostile):
    from hardware.camera import ImageFolderCamera

    good = cv2.imread(str(REAL / "screens" / "zx-qrcode-2-31.jpg"))
    cv2.imwrite(str(hostile / "zzz-last.png"), good)
    lines = []
    cam = ImageFolderCamera(str(hostile), log=lines.append)
    frames = []
    while (f := cam.read()) is not None:
        frames.append(f)
    assert len(frames) == 1 and frames[0].image.shape == good.shape
    assert len(cam.skipped) == 6 and len(lines) == 6


def test_gate_run_images_goes_past_hostile_files(hostile, tmp_path, issuer):
    import time

    from hardware.synth import phone_frame

    wallet = issuer.mint()
    cv2.imwrite(str(hostile / "zzz-ticket.png"), phone_frame(wallet.code(time.time()), seed=3))
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", issuer.event)
    (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(data, "keys", "trust", str(tmp_path / "ring.json"))
    proc = run_gate(data, "run", "--camera", f"images:{hostile}", "--json-events", "--no-wechat",
                    check=False, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("skipped unusable file") == 6
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert events and events[-1]["ticket_id"] == wallet.ticket_id


@pytest.mark.face
def test_face_commands_refuse_hostile_photos_by_name(hostile, tmp_path):
    from hardware.face import load_rgb
    from gate.errors import HardwareError

    for name in ("fifo.jpg", "zero.png", "huge.png", "bomb.png"):
        with pytest.raises(HardwareError) as e:
            load_rgb(hostile / name)
        assert name in str(e.value)
    # calibrate over a folder holding a FIFO and a link to /dev/zero: finishes, lists both
    people = tmp_path / "people"
    faces = ROOT / "tests" / "data" / "faces_real"
    for who in ("Tony_Blair", "Colin_Powell"):
        (people / who).mkdir(parents=True)
        for p in sorted((faces / who).glob("*.jpg"))[:2]:
            (people / who / p.name).write_bytes(p.read_bytes())
    os.mkfifo(people / "Tony_Blair" / "fifo.jpg")
    (people / "Colin_Powell" / "zero.jpg").symlink_to("/dev/zero")
    proc = run_gate(tmp_path / "nogate", "face", "calibrate", str(people), "--json", check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert sorted(Path(u["path"]).name for u in doc["unusable"]) == ["fifo.jpg", "zero.jpg"]
    # verify --face on a FIFO: a hardware error naming the file, not a hang
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", "evt-hostile")
    proc = run_gate(data, "verify", "--face", str(hostile / "fifo.jpg"), "GT1:x", check=False, timeout=60)
    assert proc.returncode == 6 and "fifo.jpg" in proc.stderr and "FIFO" in proc.stderr
    assert "Traceback" not in proc.stderr
