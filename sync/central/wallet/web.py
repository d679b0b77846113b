"""The wallet web app under ``/wallet`` and its JSON API under ``/wallet/api``.

Every page and script comes from this package (``static/``): no CDN. The
pages are a static shell; ``app.js`` draws everything with DOM text nodes
(never HTML from data). Strict CSP: scripts and styles from 'self' only, no
inline script, no framing; the claim token travels in the URL fragment, so it
is never sent in a request line, a log or a Referer. ``sw.js`` (scope
``/wallet/``) keeps the app and both languages' catalogues for offline use;
its cache name is a hash of the files, so a new release replaces the old one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gate import i18n
from sync.central.limits import parse_json
from sync.central.store import CentralError
from sync.central.wallet.claims import CLAIM_PATH, Claims, parse_signed

STATIC = {
    "app.js": "text/javascript", "gt1.js": "text/javascript", "idb.js": "text/javascript",
    "i18n.js": "text/javascript", "keys.js": "text/javascript", "wallet.css": "text/css",
    "sw.js": "text/javascript", "manifest.webmanifest": "application/manifest+json", "icon.svg": "image/svg+xml",
    "vendor/qrcodegen.js": "text/javascript", "vendor/ed25519.js": "text/javascript",
    "vendor/LICENSES.txt": "text/plain; charset=utf-8",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; manifest-src 'self'; worker-src 'self'; media-src 'self' blob: mediastream:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Permissions-Policy": "camera=(self), microphone=()",
           "Cross-Origin-Opener-Policy": "same-origin"}


def _read(name: str) -> bytes:
    return resources.files("sync.central.wallet").joinpath("static", *name.split("/")).read_bytes()


def _files() -> tuple[dict[str, bytes], dict[str, bytes], str]:
    """(static files, catalogues per language, release hash) — read once at start."""
    files = {name: _read(name) for name in STATIC}
    files["index.html"] = _read("index.html")
    cats = {lang: json.dumps(i18n.catalogue(lang, "wallet"), ensure_ascii=False, sort_keys=True).encode()
            for lang in i18n.SUPPORTED}
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    for lang in sorted(cats):
        h.update(lang.encode() + b"\0" + cats[lang])
    version = h.hexdigest()[:16]
    files["sw.js"] = files["sw.js"].replace(b"__RELEASE__", version.encode())
    return files, cats, version


def _json(obj, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store", **HEADERS})


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"  # the TCP peer (uvicorn proxy_headers=False)


def _token(body) -> str:
    tok = body.get("token") if isinstance(body, dict) else None
    if not isinstance(tok, str):
        raise CentralError(400, "body needs the claim token", code="BAD_REQUEST")
    return tok


def mount(app: FastAPI, store, *, clock=None) -> Claims:
    claims = Claims(store, **({"clock": clock} if clock else {}))
    files, cats, release = _files()

    def page() -> Response:
        return Response(files["index.html"], media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache", **HEADERS})

    @app.get("/wallet", include_in_schema=False)
    def wallet_root():
        return RedirectResponse("/wallet/", status_code=308)

    @app.get("/wallet/", include_in_schema=False)
    def wallet_home():
        return page()

    @app.get(CLAIM_PATH, include_in_schema=False)
    def wallet_claim():
        return page()

    @app.get("/wallet/i18n/{lang}.json", include_in_schema=False)
    def wallet_catalogue(lang: str):
        if lang not in cats:
            raise CentralError(404, "no such language", code="NOT_FOUND")
        return Response(cats[lang], media_type="application/json",
                        headers={"Cache-Control": "no-cache", **HEADERS})

    @app.get("/wallet/release.json", include_in_schema=False)
    def wallet_release():
        return _json({"release": release, "languages": list(cats)})

    # ------------------------------------------------------------ API (docs/wallet.md)

    @app.post("/wallet/api/claim/open", tags=["wallet"])
    async def claim_open(request: Request):
        """What a claim link offers (event, tier, zone, entries, face policy); refusals carry a ``code``."""
        body = parse_json(await request.body())
        return _json(await run_in_threadpool(claims.open, _token(body), client=_client(request)))

    @app.post("/wallet/api/claim/face", tags=["wallet"])
    async def claim_face(request: Request):
        """One frame of the holder's face (base64 JPEG): made into an encoding at once, never stored."""
        body = parse_json(await request.body())
        try:
            jpeg = base64.b64decode(body["image"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise CentralError(400, "body needs image: a base64 JPEG", code="BAD_REQUEST") from None
        return _json(await run_in_threadpool(claims.face_frame, _token(body), jpeg, client=_client(request)))

    @app.post("/wallet/api/claim", tags=["wallet"])
    async def claim(request: Request):
        """Take the ticket: ``{token, public_key (base64url raw Ed25519), face: bool}`` → the credential."""
        body = parse_json(await request.body())
        try:
            pk = body["public_key"]
            pub = base64.urlsafe_b64decode(pk + "=" * (-len(pk) % 4))
            face = body.get("face", False)
            if not isinstance(face, bool):
                raise TypeError
        except (KeyError, TypeError, ValueError, binascii.Error, AttributeError):
            raise CentralError(400, "body needs token, public_key (base64url) and face (true/false)",
                               code="BAD_REQUEST") from None
        return _json(await run_in_threadpool(claims.redeem, _token(body), pub, face=face, client=_client(request)),
                     201)

    @app.post("/wallet/api/transfer", tags=["wallet"])
    async def transfer(request: Request):
        """The holder gives the ticket away (signed by the wallet key): a new claim link (a path)."""
        req = parse_signed(parse_json(await request.body()))
        return _json(await run_in_threadpool(claims.transfer, req, client=_client(request)))

    @app.post("/wallet/api/status", tags=["wallet"])
    async def status(request: Request):
        """The holder's ticket as central knows it (signed by the wallet key)."""
        req = parse_signed(parse_json(await request.body()))
        return _json(await run_in_threadpool(claims.status, req, client=_client(request)))

    @app.get("/wallet/{name:path}", include_in_schema=False)
    def wallet_static(name: str):
        if name not in STATIC:
            raise CentralError(404, "no such file", code="NOT_FOUND")
        headers = {"Cache-Control": "no-cache", **HEADERS}
        if name == "sw.js":
            headers["Service-Worker-Allowed"] = "/wallet/"
        return Response(files[name], media_type=STATIC[name], headers=headers)

    return claims
