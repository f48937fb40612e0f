"""CORS: which pages on other origins may read the HTTP transports and the API.

One policy, driven by the same list of origins that may open WebSockets
(``Settings.allowed_origins``, ``--allowed-origins``). A request whose
``Origin`` is listed gets ``Access-Control-Allow-Origin`` with that origin
(never ``*``), ``Access-Control-Allow-Credentials: true`` only when the
policy allows credentials, and every answer of a handler with a policy says
``Vary: Origin`` so a cache never hands one origin's answer to another.
A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from a listed
origin is answered 204 with the allowed methods and headers; from any other
origin it gets 204 without them, and the browser refuses the real request.

>>> policy = CorsPolicy(("https://app.example.com",), methods=("GET",))
>>> policy.allowed("https://APP.example.com/"), policy.allowed("https://evil.example")
('https://APP.example.com/', None)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from tornado.web import RequestHandler

#: Seconds a browser may cache a preflight's answer.
PREFLIGHT_MAX_AGE = 600


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Origins allowed to read a handler's answers from another origin.

    ``origins`` are ``scheme://host[:port]``, compared case-insensitively and
    without a trailing slash; ``methods`` and ``headers`` are what a
    preflight may ask for.
    """

    origins: Collection[str]
    credentials: bool = False
    methods: tuple[str, ...] = ("GET",)
    headers: tuple[str, ...] = ("Authorization",)

    def allowed(self, origin: str | None) -> str | None:
        """``origin`` as the browser sent it if it is listed, else None."""
        if not origin or not self.origins:
            return None
        normal = origin.rstrip("/").lower()
        return origin if any(normal == o.rstrip("/").lower() for o in self.origins) else None

    def apply(self, handler: RequestHandler) -> None:
        """Set the CORS headers of an answer to ``handler``'s request.

        Nothing at all when the policy lists no origin, so a same-origin
        deployment answers exactly as before.
        """
        if not self.origins:
            return
        handler.set_header("Vary", "Origin")
        origin = self.allowed(handler.request.headers.get("Origin"))
        if origin is None:
            return
        handler.set_header("Access-Control-Allow-Origin", origin)
        if self.credentials:
            handler.set_header("Access-Control-Allow-Credentials", "true")

    def preflight(self, handler: RequestHandler) -> None:
        """Answer an ``OPTIONS`` request: 204, with the preflight headers when
        the origin is listed and asks for an allowed method."""
        handler.set_status(204)
        handler.set_header("Allow", ", ".join((*self.methods, "OPTIONS")))
        self.apply(handler)
        headers = handler.request.headers
        method = headers.get("Access-Control-Request-Method", "").upper()
        if self.allowed(headers.get("Origin")) is not None and method in self.methods:
            handler.set_header("Access-Control-Allow-Methods", ", ".join(self.methods))
            if self.headers:
                handler.set_header("Access-Control-Allow-Headers", ", ".join(self.headers))
            handler.set_header("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE))
        handler.finish()
