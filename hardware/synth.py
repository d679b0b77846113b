"""Rendering QR codes into camera-like frames: the synthetic camera for the demo
and dry runs, and the perturbed frames tests and benchmarks decode.

Perturbations imitate a phone held to a lane camera: perspective tilt, blur,
sensor noise, low contrast, glare and the moiré of a screen filmed by a camera.
"""

from __future__ import annotations

import numpy as np

PERTURBATIONS = ("clean", "perspective", "blur", "noise", "low_contrast", "glare", "moire")


def qr_matrix(text: str):
    import segno

    q = segno.make(text, error="m", micro=False)
    return np.array(q.matrix, dtype=np.uint8), q.version


def render_qr(text: str, module_px: int = 4, border: int = 4) -> np.ndarray:
    """The code as a grey image: dark modules 0, light 255, with a quiet zone."""
    m, _ = qr_matrix(text)
    img = np.where(m == 1, 0, 255).astype(np.uint8)
    img = np.pad(img, border, constant_values=255)
    return np.kron(img, np.ones((module_px, module_px), dtype=np.uint8))


def _place(frame: np.ndarray, code: np.ndarray, cx: int, cy: int) -> None:
    h, w = code.shape
    y0, x0 = max(0, cy - h // 2), max(0, cx - w // 2)
    y1, x1 = min(frame.shape[0], y0 + h), min(frame.shape[1], x0 + w)
    frame[y0:y1, x0:x1] = code[: y1 - y0, : x1 - x0]


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A dim, textured scene (a person's jacket, the lane) rather than flat grey."""
    base = rng.integers(60, 120)
    grad = np.linspace(0, 40, width, dtype=np.float32)[None, :]
    bg = base + grad + rng.normal(0, 6, (height, width)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def phone_frame(text: str | None, *, width: int = 640, height: int = 480,
                perturb: str = "clean", seed: int = 0, module_px: int | None = None) -> np.ndarray:
    """A grey frame of a phone screen showing ``text`` (None: no code, just the scene)."""
    import cv2

    rng = np.random.default_rng(seed)
    frame = background(width, height, rng)
    if text is None:
        return frame
    m, _ = qr_matrix(text)
    n = m.shape[0] + 8
    px = module_px or max(2, int(min(width, height) * float(rng.uniform(0.45, 0.62))) // n)
    code = render_qr(text, px)
    # the phone: a bright screen with a bezel around the code
    pad = px * 2
    screen = np.pad(code, pad, constant_values=245)
    screen = np.pad(screen, 6, constant_values=20)
    cx = width // 2 + int(rng.integers(-width // 12, width // 12 + 1))
    cy = height // 2 + int(rng.integers(-height // 12, height // 12 + 1))
    if perturb == "perspective":
        h, w = screen.shape
        d = 0.16
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        jit = rng.uniform(0, d, (4, 2)) * np.float32([w, h])
        dst = np.float32([[jit[0][0], jit[0][1]], [w - jit[1][0], jit[1][1]],
                          [w - jit[2][0], h - jit[2][1]], [jit[3][0], h - jit[3][1]]])
        M = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(screen, M, (w, h), borderValue=0)
        mask = cv2.warpPerspective(np.full_like(screen, 255), M, (w, h), borderValue=0)
        region = np.zeros_like(frame)
        _place(region, warped, cx, cy)
        mregion = np.zeros_like(frame)
        _place(mregion, mask, cx, cy)
        frame = np.where(mregion > 0, region, frame)
    else:
        _place(frame, screen, cx, cy)
    f = frame.astype(np.float32)
    if perturb == "blur":
        f = cv2.GaussianBlur(f, (0, 0), sigmaX=px * float(rng.uniform(0.4, 0.62)))
    elif perturb == "noise":
        f += rng.normal(0, float(rng.uniform(45, 75)), f.shape)
    elif perturb == "low_contrast":
        f = 120 + (f - 120) * float(rng.uniform(0.05, 0.1)) + rng.normal(0, 3, f.shape)
    elif perturb == "glare":
        yy, xx = np.mgrid[0:height, 0:width]
        gx, gy = cx + rng.integers(-60, 60), cy + rng.integers(-60, 60)
        f += float(rng.uniform(170, 260)) * np.exp(-(((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * (min(width, height) / 6) ** 2)))
    elif perturb == "moire":
        yy, xx = np.mgrid[0:height, 0:width]
        angle = rng.uniform(0.2, 0.6)
        period = rng.uniform(2.2, 3.6)
        f += float(rng.uniform(60, 90)) * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        f = cv2.GaussianBlur(f, (0, 0), sigmaX=0.7)
    return np.clip(f, 0, 255).astype(np.uint8)
