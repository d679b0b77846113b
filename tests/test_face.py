"""Face verification with real photos (gate/assets/faces, see its README):
pairs, ambiguity, the CLI box-office flow, the lane flow, and privacy."""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import subprocess
import sys

import pytest

from crypto.issuer import ticket_record
from gate.decision import Reason, Sub, face_distance
from conftest import ROOT, json_lines, run_gate, write_jsonl

FACES = ROOT / "gate" / "assets" / "faces"
PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
NOW = 1_807_283_662


def test_face_models_load_loudly():
    # face_recognition_models + pkg_resources can make `import face_recognition` exit 0 silently:
    # the marker printed after the import proves the import really returned.
    code = "import face_recognition; print('imported', callable(face_recognition.face_encodings))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "imported True", out.stdout + out.stderr
    from hardware.face import FaceEngine, models_dir
    assert (models_dir() / "dlib_face_recognition_resnet_model_v1.dat").stat().st_size > 1_000_000
    FaceEngine()


@pytest.fixture(scope="module")
def encodings():
    from hardware.face import FaceEngine, capture_from_photo
    engine = FaceEngine(upsample=1, max_side=800)
    return {p.stem: capture_from_photo(p, engine) for p in sorted(FACES.glob("*.jpg"))}


def _person(stem: str) -> str:
    return stem.replace("_partial_face", "").rstrip("0123456789")


def test_every_same_person_pair_matches_and_every_other_pair_does_not(encodings):
    singles = {k: v.encoding for k, v in encodings.items() if k != "two_people"}
    assert all(e is not None for e in singles.values()), [k for k, e in singles.items() if e is None]
    same = diff = 0
    for a, b in itertools.combinations(sorted(singles), 2):
        d = face_distance(singles[a], singles[b])
        if _person(a) == _person(b):
            assert d <= 0.5, (a, b, d)
            same += 1
        else:
            assert d > 0.5, (a, b, d)
            diff += 1
    assert same >= 10 and diff >= 50


def test_two_people_is_not_matched_blindly(encodings):
    cap = encodings["two_people"]
    assert cap.encoding is None and cap.sub is Sub.SEVERAL_FACES


@pytest.fixture
def face_gate(tmp_path, issuer):
    data = tmp_path / "gate"
    run_gate(data, "init", "--event", issuer.event)
    (tmp_path / "ring.json").write_text(json.dumps(issuer.keyring()))
    run_gate(data, "keys", "trust", str(tmp_path / "ring.json"))
    return data


def test_box_office_enrolment_and_verify_with_face(face_gate, issuer, tmp_path, encodings):
    w = issuer.mint(face=True, entries=0)
    run_gate(face_gate, "ledger", "import", str(write_jsonl(tmp_path / "t.jsonl", [ticket_record(w, entries=0)])))
    out = json_lines(run_gate(face_gate, "verify", "--json", "--dry-run", "--now", str(NOW), w.code(NOW)).stdout)
    assert out[0]["reason"] == "NO_FACE_ENROLLED"
    r = run_gate(face_gate, "face", "enroll", w.ticket_id, str(FACES / "two_people.jpg"), check=False)
    assert r.returncode != 0 and "one person" in r.stderr
    run_gate(face_gate, "face", "enroll", w.ticket_id, str(FACES / "obama1.jpg"))

    def verify(*extra):
        return json_lines(run_gate(face_gate, "verify", "--json", "--dry-run", "--now", str(NOW),
                                   *extra, w.code(NOW)).stdout)[0]

    assert verify()["reason"] == "FACE_REQUIRED"  # face-bound ticket, no face presented
    ok = verify("--face", str(FACES / "obama2.jpg"))
    assert ok["reason"] == "ACCEPT" and 0 < ok["face_distance"] <= 0.5
    bad = verify("--face", str(FACES / "biden1.jpg"))
    assert bad["reason"] == "FACE_MISMATCH" and bad["face_distance"] > 0.5
    assert verify("--face", str(FACES / "two_people.jpg"))["reason"] == "FACE_REQUIRED"
    r = run_gate(face_gate, "face", "enroll", "00" * 16, str(FACES / "obama1.jpg"), check=False)
    assert r.returncode != 0 and "not in the ledger" in r.stderr


def _raw_template_bytes(enc) -> list[bytes]:
    raw = struct.pack("<128d", *enc)
    return [raw[i:i + 32] for i in range(0, len(raw), 256)]  # several 4-float windows


def _disk_bytes(data) -> bytes:
    return b"".join(p.read_bytes() for p in data.iterdir() if p.name.startswith("gate.db"))


def test_templates_are_encrypted_at_rest_and_wiped(face_gate, issuer, tmp_path, encodings):
    enc = encodings["rose_leslie1"].encoding
    w = issuer.mint(face=True)
    import base64
    rec = ticket_record(w, face_required=True, face_template=struct.pack("<128d", *enc))
    run_gate(face_gate, "ledger", "import", str(write_jsonl(tmp_path / "t.jsonl", [rec])))
    run_gate(face_gate, "verify", "--now", str(NOW), "--face", str(FACES / "rose_leslie2.jpg"), w.code(NOW))
    disk = _disk_bytes(face_gate)
    assert not any(chunk in disk for chunk in _raw_template_bytes(enc)), "plaintext template on disk"
    assert base64.b64encode(struct.pack("<128d", *enc))[:40] not in disk
    assert json.loads(run_gate(face_gate, "ledger", "stats", "--json").stdout)["face_templates"] == 1
    log = run_gate(face_gate, "log", "--json").stdout
    assert "template" not in log and json_lines(log)[0]["reason"] == "ACCEPT"
    sealed = __import__("sqlite3").connect(face_gate / "gate.db").execute(
        "SELECT face_template FROM tickets").fetchone()[0]
    run_gate(face_gate, "wipe", "--biometrics")
    disk = _disk_bytes(face_gate)
    assert sealed[12:60] not in disk  # not even the ciphertext survives in free pages or the WAL
    assert json.loads(run_gate(face_gate, "ledger", "stats", "--json").stdout)["face_templates"] == 0


def test_retention_deadline_deletes_templates(face_gate, issuer, tmp_path, encodings):
    w = issuer.mint(face=True)
    run_gate(face_gate, "ledger", "import", str(write_jsonl(tmp_path / "t.jsonl", [ticket_record(w)])))
    run_gate(face_gate, "face", "enroll", w.ticket_id, str(FACES / "kit_harington1.jpg"))
    run_gate(face_gate, "face", "retention", "--until", "4102444800")  # 2100: not yet
    assert json.loads(run_gate(face_gate, "ledger", "stats", "--json").stdout)["face_templates"] == 1
    run_gate(face_gate, "face", "retention", "--until", "1000")  # long past
    assert json.loads(run_gate(face_gate, "ledger", "stats", "--json").stdout)["face_templates"] == 0


def test_lane_face_flow_uses_the_face_camera(gate, issuer, tmp_path, encodings):
    from gate import ledger
    from gate.lane import Lane
    from hardware.registry import open_device
    from hardware.face import FaceEngine, FaceSource
    from hardware.relay import SimRelay
    from test_lane import FakeClock

    w = issuer.mint(face=True, entries=0)
    ledger.import_tickets(gate.conn, write_jsonl(tmp_path / "t.jsonl", [ticket_record(w, entries=0)]),
                          event=gate.policy.event, data_key=gate.data_key, now=0)
    ledger.enroll_face(gate.conn, w.ticket_id, encodings["alex_lacamoire1"].encoding, gate.data_key)

    def lane_with(photo):
        cam_dir = tmp_path / photo
        cam_dir.mkdir()
        shutil.copy(FACES / f"{photo}.jpg", cam_dir / "0001.jpg")
        src = FaceSource(open_device("camera", f"images:{cam_dir}"), FaceEngine())
        return Lane(gate, relay=SimRelay(), sensor=open_device("sensor", "sim"), clock=FakeClock(NOW), face=src)

    lane = lane_with("alex_lacamoire2")
    ev = lane.submit(w.code(NOW))
    assert ev.decision.reason is Reason.ACCEPT and ev.decision.face_distance <= 0.5
    assert len(lane.relay.pulses) == 1
    lane = lane_with("kit_harington2")
    ev = lane.submit(w.code(NOW + 15))
    assert ev.decision.reason is Reason.FACE_MISMATCH and lane.relay.pulses == []


def _shifted_frames(folder, photo, shifts):
    """One frame per shift: the holder's face moving across the camera's view."""
    import cv2
    import numpy as np

    img = cv2.imread(str(FACES / photo))
    h, w = img.shape[:2]
    folder.mkdir()
    for i, dx in enumerate(shifts):
        canvas = np.full((h, w + max(shifts), 3), 128, np.uint8)
        canvas[:, dx:dx + w] = img
        cv2.imwrite(str(folder / f"{i:03d}.png"), canvas)
    return folder


def test_liveness_refuses_a_still_photo_and_accepts_a_moving_face(tmp_path):
    # A printed photo held still never moves: with liveness on, no capture.
    # The same face moving between frames passes; and without liveness the
    # still photo is an ordinary capture (so the refusal is the liveness check).
    from hardware.camera import PhotoCamera
    from hardware.face import FaceEngine, FaceSource
    from hardware.registry import open_device

    engine = FaceEngine()
    still = FaceSource(PhotoCamera(str(FACES / "obama1.jpg")), engine, liveness=True, max_frames=4)
    cap = still.capture(30.0)
    assert cap.encoding is None and cap.sub is Sub.NOT_LIVE
    plain = FaceSource(PhotoCamera(str(FACES / "obama1.jpg")), engine, liveness=False, max_frames=4)
    assert plain.capture(30.0).encoding is not None
    moving = _shifted_frames(tmp_path / "moving", "obama1.jpg", [0, 60, 120])
    live = FaceSource(open_device("camera", f"images:{moving}"), engine, liveness=True, max_frames=3)
    assert live.capture(30.0).encoding is not None
