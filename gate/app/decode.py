"""``gate decode``: what the lane's QR pipeline reads in still images, for an
operator checking a camera's picture or a ticket print. Needs no gate data."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gate.errors import ConfigError
from gate.i18n import _


def _frame_size(spec: str) -> tuple[int, int] | None:
    if spec == "native":
        return None
    w, sep, h = spec.lower().partition("x")
    if sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
        return int(w), int(h)
    raise ConfigError(_("--frame {value}: give WIDTHxHEIGHT, e.g. 640x480, or 'native'").format(value=repr(spec)))


def _images(paths: list[str]):
    """(path, problem) for each image named or found (recursively, in name order) in a folder.
    Anything with an image suffix is listed (a FIFO or a link to a device too): the image
    door refuses it by name, so it is counted rather than silently left out."""
    from hardware.imagefile import IMAGE_SUFFIXES

    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if not f.is_dir() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                yield p, _("no image files in this folder")
            for f in found:
                yield f, None
        elif p.exists() or p.is_symlink():
            yield p, None
        else:
            yield p, _("no such file or folder")


def fit(image, size: tuple[int, int] | None):
    """Shrink (never enlarge) to fit the lane camera's frame, as the camera would deliver it."""
    import cv2

    if size is None:
        return image
    h, w = image.shape[:2]
    k = min(size[0] / w, size[1] / h)
    if k >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def cmd_decode(args) -> int:
    from hardware.imagefile import UnusableImage, read_image
    from hardware.qr import FramePipeline, make_decoder

    size = _frame_size(args.frame)
    decoder = make_decoder(args.decoder)
    fallback = None
    if not args.no_wechat:
        from hardware import wechat
        why = wechat.available()
        if why:
            print(_("gate decode: WeChat CNN off: {why}").format(why=why), file=sys.stderr, flush=True)
        else:
            fallback = wechat.WeChatFallback(blocking=True)  # a still image: nothing to keep moving
    bad = 0
    for path, problem in _images(args.images):
        img = None
        if problem is None:
            try:
                img = read_image(path, unchanged=size is None, fit=size)
            except UnusableImage as e:
                problem = str(e).removeprefix(f"{path}: ").removeprefix(f"{path}：")  # English, Chinese
        if problem is not None:
            bad += 1
            print(_("gate decode: {file}: {problem}").format(file=path, problem=problem), file=sys.stderr, flush=True)
            continue
        frame = fit(img, size)
        pipe = FramePipeline(decoder, fallback=fallback)  # a fresh lane view per image: no de-duplication
        t = time.perf_counter_ns()
        texts = pipe.process(frame, 0)
        ms = (time.perf_counter_ns() - t) / 1e6
        if pipe.errors:
            bad += 1
            print(_("gate decode: {file}: the decoder failed on this image ({problem})").format(
                file=path, problem=pipe.last_error), file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps({"image": str(path), "texts": texts, "ms": round(ms, 3)},
                             ensure_ascii=False, separators=(",", ":")), flush=True)
        else:
            h, w = frame.shape[:2]
            shown = "  ".join(json.dumps(t, ensure_ascii=False) for t in texts) if texts else _("no QR code")
            print(f"{path}  {w}x{h}  {ms:.1f} ms  {shown}", flush=True)
    if bad:
        print(_("gate decode: {n} file(s) could not be used (see above); the others were read").format(n=bad),
              file=sys.stderr, flush=True)
    return 1 if bad else 0


def register(sub) -> None:
    p = sub.add_parser("decode", help=_("show the QR codes the lane would read in images"),
                       description=_("Run the lane's QR pipeline (first pass, its retries, then the WeChat CNN) on each "
                                   "IMAGE, or on every image under DIR, shrunk to the lane camera's frame, "
                                   "and print the texts read and the time taken. A file that is not a usable "
                                   "image (not a regular file, over 64 MB or 50 megapixels, damaged) is "
                                   "reported and skipped; the exit status is then 1."))
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR", help=_("image files, or folders searched for images"))
    p.add_argument("--decoder", choices=["zxing", "pyzbar"], default="zxing", help=_("QR decoder (default: zxing)"))
    p.add_argument("--frame", default="640x480", metavar="WxH",
                   help=_("shrink images to fit this frame, as the lane camera delivers them "
                        "(default 640x480; 'native' keeps the image size)"))
    p.add_argument("--json", action="store_true",
                   help=_('one JSON object per image: {"image": PATH, "texts": [...], "ms": FLOAT}'))
    p.add_argument("--no-wechat", action="store_true",
                   help=_("do not run OpenCV's WeChat CNN after the zxing passes find nothing (on by default)"))
    p.set_defaults(func=cmd_decode)
