"""Who is asking, as FastAPI dependencies: the ops room's session cookie, HTTP
basic auth for the report API, the roles (viewer, admin), the page language,
and the CSRF check of every POST (the token is derived from the session, so it
is bound to it; it travels only in POST bodies, never in URLs).

Every dependency that touches the database or a password is a plain ``def``:
FastAPI runs it in the threadpool, never on the event loop. Passwords are
throttled before scrypt runs (:mod:`.throttle`).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request

from gate.i18n import accept_language, choose
from sync.central.ops import accounts
from sync.central.ops.throttle import Busy, Throttled
from sync.central.store import CentralError

SESSION_COOKIE, LOGIN_CSRF_COOKIE, LANG_COOKIE = "ops_session", "ops_csrf", "ops_lang"
MAX_FORM = 8192


@dataclass(frozen=True)
class User:
    name: str
    role: str
    session: str | None = None  # the session token (None: basic auth)

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @property
    def csrf(self) -> str:
        return accounts.csrf_token(self.session) if self.session else ""


class Redirect(Exception):
    def __init__(self, url: str):
        self.url = url


def room(request: Request):
    return request.app.state.ops_room


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def lang(request: Request) -> str:
    """The page language: the user's switch (cookie), else the browser's Accept-Language."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen:
        return choose(chosen)
    return accept_language(request.headers.get("accept-language"))


def check_password(rm, request: Request, name: str, password: str) -> str:
    """The role for a right password; AuthError, Throttled or Busy otherwise. Throttled per address
    and per (name, address) *before* the scrypt (concurrent attempts are counted when they start)."""
    with rm.throttle.attempt(client_address(request), name[:64], now=rm.clock()):
        with rm.throttle.kdf_slot():
            return accounts.check(rm.db, name, password)


def _basic(rm, request: Request) -> User:
    auth = request.headers.get("authorization", "")
    try:
        name, _, pw = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise CentralError(401, "malformed basic credentials") from None
    if "\x00" in name or "\x00" in pw:  # PostgreSQL cannot compare text with NUL
        raise CentralError(401, "malformed basic credentials (NUL character)")
    try:
        role = check_password(rm, request, name, pw)
    except accounts.AuthError as exc:
        raise CentralError(401, str(exc)) from None
    except Throttled as exc:
        raise CentralError(429, str(exc)) from None
    except Busy as exc:
        raise CentralError(503, str(exc)) from None
    return User(name, role)


def current_user(request: Request) -> User | None:
    """The ops user of this request, or None; 401 for any other credentials (device tokens)."""
    rm = room(request)
    tok = request.cookies.get(SESSION_COOKIE)
    if tok and "\x00" not in tok and len(tok) < 200:
        u = accounts.session_user(rm.db, tok, now=rm.clock())
        if u:
            return User(u["name"], u["role"], tok)
    auth = request.headers.get("authorization", "")
    if auth.startswith("Basic "):
        return _basic(rm, request)
    if auth:
        raise CentralError(401, "this needs ops credentials (a session, or basic auth with an ops "
                                "account); device tokens cannot read it")
    return None


def api_user(request: Request) -> User:
    """For the report API: a session or basic auth, else 401."""
    u = current_user(request)
    if u is None:
        raise CentralError(401, "this needs ops credentials: log in at /ops, or use basic auth with an "
                                "account made by 'gate central ops add NAME'")
    return u


def page_user(request: Request) -> User:
    """For pages: a session (or basic auth), else off to the login page."""
    u = current_user(request)
    if u is None:
        raise Redirect("/ops/login?next=" + quote(request.url.path + (
            "?" + request.url.query if request.url.query else "")))
    return u


async def form(request: Request) -> dict[str, str]:
    """A POSTed urlencoded form (at most MAX_FORM bytes, UTF-8, no NUL)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise CentralError(413, "form too large")
    try:
        f = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        raise CentralError(400, "form is not UTF-8") from None
    if any("\x00" in k or "\x00" in v for k, v in f.items()):
        raise CentralError(400, "form field contains a NUL character")
    return f


def posted(user: User = Depends(page_user), f: dict = Depends(form)) -> tuple[User, dict]:
    """A POST from a page: its CSRF token must be the one of this session."""
    if not user.session or not hmac.compare_digest(user.csrf.encode(), f.get("csrf", "").encode()):
        raise CentralError(403, "CSRF token missing or wrong: reload the page and try again")
    return user, f


def admin_posted(p: tuple = Depends(posted)) -> tuple[User, dict]:
    user, f = p
    if not user.admin:
        raise CentralError(403, "this needs an admin ops account")
    return user, f


def login_csrf(request: Request) -> tuple[str, bool]:
    """The login form's token (before there is a session): a cookie and the same value in the form."""
    tok = request.cookies.get(LOGIN_CSRF_COOKIE)
    if tok and 20 <= len(tok) <= 100:
        return tok, False
    return secrets.token_urlsafe(24), True
