"""The admin page at ``/admin``: a login, then the hub's live state.

Off unless an admin password (``--admin-password``, else the API key) is
set: without one the routes do not exist (404). The session is a signed
cookie (Tornado's ``create_signed_value``, HMAC-SHA256) holding the time
of the login; it lasts :data:`SESSION_SECONDS`, is ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over HTTPS (or ``X-Forwarded-Proto:
https`` from a proxy), and scoped to ``/admin``. Its key is derived from
the password with scrypt (:func:`session_key`, some 70 ms of work) and a
random salt made once per ``torchannels serve`` (:func:`session_salt`),
before ``--workers`` fork: every worker accepts a login, a captured
cookie costs a guesser that much work per guess, and a restart or a
changed password ends every session. Wrong passwords are limited per
client address (:mod:`.login_limit`). Every form and every
state-changing call carries Tornado's XSRF token. The key never travels
in a URL.

The page tails any channel through ``/admin/channels`` (and
``/admin/channels/ws``): the ordinary subscribe endpoint, authorized by the
admin session instead of a token, so the page needs no token secret and
mints no token.

Every admin path is same-origin only, whatever ``--allowed-origins`` and
``--cors-credentials`` say: no answer carries a CORS header, and a request
whose ``Origin`` is not the page's own host (the forwarded host behind a
trusted proxy) is refused with 403 ``forbidden`` on every transport, the
WebSocket included. A ``SameSite=Strict`` cookie alone would not do: it
still goes to a page on another port or a sibling subdomain.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import time
import urllib.parse
from typing import Any

import tornado.httputil
import tornado.web

from ..cors import CorsPolicy
from ..errors import FORBIDDEN, AccessDenied
from ..forwarded import log_refused_origin
from ..handlers import ChannelMixin
from ..session import Subscription
from ..transports.base import refuse
from .login_limit import LoginLimit

COOKIE = "torchannels_admin"
#: How long a login lasts.
SESSION_SECONDS = 12 * 3600
#: Security headers of every admin answer: no framing, no caching, no
#: script or connection that is not the hub's own.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it a form POST says `Origin: null`, which the
    # origin check below refuses. same-origin still leaks nothing elsewhere.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
    ),
}


#: scrypt's cost: 2**14 rounds of 16 KiB (16 MiB, some 70 ms of one core).
SCRYPT_N = 2**14
_salt: bytes | None = None


def session_salt() -> bytes:
    """This server's salt for the session key: random, made at the first
    call. ``torchannels serve`` calls it before ``--workers`` fork, so the
    workers share it (and accept each other's cookies)."""
    global _salt
    if _salt is None:
        _salt = os.urandom(16)
    return _salt


@functools.lru_cache(maxsize=8)
def session_key(password: str, salt: bytes) -> str:
    """The key that signs session cookies: scrypt of the password.

    Slow on purpose: a captured cookie lets an attacker test passwords
    offline (the API key itself, when it is the password), at one scrypt
    each instead of one HMAC. Cached, so each process pays once."""
    derived = hashlib.scrypt(
        password.encode(), salt=b"torchannels admin session" + salt, n=SCRYPT_N, r=8, p=1
    )
    return derived.hex()


class AdminAuth:
    """The admin password, the key that signs session cookies, and the
    limit on wrong passwords.

    >>> auth = AdminAuth("pw")
    >>> auth.expires(auth.cookie(now=1000.0), now=1001.0)
    44200.0
    >>> auth.expires(b"forged", now=1001.0) is None
    True
    """

    def __init__(
        self, password: str, cookie_secret: str | None = None, limit: LoginLimit | None = None
    ) -> None:
        self.password = password
        # Derived, not the password itself: the cookie key must not reveal it.
        self.secret = cookie_secret or session_key(password, session_salt())
        self.limit = limit or LoginLimit()

    def check(self, given: str) -> bool:
        """Whether ``given`` is the password (compared in constant time)."""
        return hmac.compare_digest(given.encode(), self.password.encode())

    def cookie(self, now: float | None = None) -> bytes:
        """A fresh session cookie value."""
        issued = int(time.time() if now is None else now)
        return tornado.web.create_signed_value(self.secret, COOKIE, str(issued))

    def expires(self, value: str | bytes | None, now: float | None = None) -> float | None:
        """When the session of cookie ``value`` ends; None if it is not a
        valid, current session."""
        if not value:
            return None
        decoded = tornado.web.decode_signed_value(self.secret, COOKIE, value, max_age_days=1)
        if decoded is None or not decoded.isdigit():
            return None
        end = float(int(decoded) + SESSION_SECONDS)
        return end if end > (time.time() if now is None else now) else None


#: No origin but the page's own may read an admin answer.
SAME_ORIGIN_ONLY = CorsPolicy(())


def own_origin(request: tornado.httputil.HTTPServerRequest, origin: str) -> bool:
    """Whether ``origin`` is the page's own: its host is the one the client
    asked for (``request.host``, forwarded by a trusted proxy) or the
    ``Host`` header.

    >>> from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
    >>> line = RequestStartLine("GET", "/admin", "HTTP/1.1")
    >>> request = HTTPServerRequest(start_line=line, headers=HTTPHeaders(Host="hub:8090"))
    >>> own_origin(request, "http://HUB:8090"), own_origin(request, "http://hub:8091")
    (True, False)
    """
    netloc = urllib.parse.urlsplit(origin).netloc.lower()
    hosts = {request.host.lower(), request.headers.get("Host", "").lower()}
    return bool(netloc) and netloc in hosts


def refuse_other_origins(handler: tornado.web.RequestHandler) -> bool:
    """Answer 403 ``forbidden`` to a request from a page on another origin;
    True if refused. A request without ``Origin`` (a navigation, a
    same-origin GET) passes: only a browser reading across origins is at
    stake, and a browser always names the origin then."""
    origin = handler.request.headers.get("Origin")
    if origin is None or own_origin(handler.request, origin):
        return False
    log_refused_origin(origin, handler.request)
    refuse(handler, 403, FORBIDDEN, "the admin paths answer only the admin page's own origin")
    return True


class AdminHandler(tornado.web.RequestHandler):
    """Base of the admin handlers: the session, headers, XSRF on POST."""

    def initialize(self, auth: AdminAuth) -> None:
        self.auth = auth

    def set_default_headers(self) -> None:
        for name, value in HEADERS.items():
            self.set_header(name, value)

    def session_expires(self) -> float | None:
        return self.auth.expires(self.get_cookie(COOKIE))

    def prepare(self) -> None:
        if refuse_other_origins(self):
            return
        if self.request.method == "POST":
            self.check_xsrf_cookie()  # the app has no xsrf_cookies setting: asked here


class AdminPageHandler(AdminHandler):
    """``GET /admin``: the dashboard, or the login form without a session."""

    def get(self) -> None:
        if self.session_expires() is None:
            self.render("admin_login.html", error=None)
        else:
            self.render("admin.html")


class AdminLoginHandler(AdminHandler):
    """``POST /admin/login`` with ``password``: a session cookie, then back to /admin."""

    def post(self) -> None:
        # The client's address: forwarded by a trusted proxy (HubApplication).
        address = self.request.remote_ip or ""
        limit = self.auth.limit
        wait = limit.wait(address)
        if wait > 0:  # not even checked: a guess while waiting tells nothing
            self._too_many(wait)
            return
        if not self.auth.check(self.get_body_argument("password", "")):
            wait = limit.failed(address)
            if wait > 0:
                self._too_many(wait)
                return
            self.set_status(403)
            self.render("admin_login.html", error="Wrong password.")
            return
        limit.succeeded(address)
        self.set_cookie(
            COOKIE,
            self.auth.cookie(),
            path="/admin",
            expires_days=SESSION_SECONDS / 86400,
            httponly=True,
            samesite="Strict",
            secure=self._over_https(),
        )
        self.redirect("/admin", status=303)

    def _too_many(self, wait: float) -> None:
        seconds = math.ceil(wait)
        self.set_status(429)
        self.set_header("Retry-After", str(seconds))
        self.render(
            "admin_login.html",
            error=f"Too many wrong passwords from your address: try again in {seconds} s.",
        )

    def _over_https(self) -> bool:
        # Trusting the proxy's header here is safe: a forged one can only
        # make the cookie Secure, which breaks nothing but the forger's login.
        forwarded = self.request.headers.get("X-Forwarded-Proto", "")
        return self.request.protocol == "https" or forwarded.lower() == "https"


class AdminLogoutHandler(AdminHandler):
    """``POST /admin/logout``: the session cookie is cleared."""

    def post(self) -> None:
        self.clear_cookie(COOKIE, path="/admin")
        self.redirect("/admin", status=303)


class AdminChannelHandler(ChannelMixin, tornado.web.RequestHandler):
    """``/admin/channels``: subscriptions to any channel for an admin session."""

    user_limited_applies = False  # an admin tails personal channels too

    def can_publish(self, sub: Subscription, data: dict[str, Any]) -> bool:
        """The admin page publishes through its own API, never as a client."""
        return False

    def initialize(self, **kwargs: Any) -> None:
        self.auth: AdminAuth = kwargs.pop("auth")
        super().initialize(**kwargs)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def cors_policy(self) -> CorsPolicy:
        """None: the admin tail is same-origin only (see the module)."""
        return SAME_ORIGIN_ONLY

    def prepare(self) -> None:
        refuse_other_origins(self)  # on the WebSocket route too, before the upgrade

    def _expires(self) -> float | None:
        if not hasattr(self, "_session"):
            self._session = self.auth.expires(self.get_cookie(COOKIE))
        return self._session

    def can_access(self, sub: Subscription) -> bool:
        if self._expires() is None:
            raise AccessDenied(FORBIDDEN, "log in at /admin to read channels here")
        return True

    def subscription_expires(self) -> float | None:
        return self._expires()

    def check_origin(self, origin: str) -> bool:
        """The admin page's own origin only, whatever ``--allowed-origins`` says."""
        return own_origin(self.request, origin)
