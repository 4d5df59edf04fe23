"""The dashboard's guards: the access token (bearer header or login cookie), CSRF tokens for
forms, the Host header check and the security headers every response carries."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "omniq_session"
CSRF_COOKIE = "omniq_csrf"
SESSION_SECONDS = 12 * 3600
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

# No scripts at all; styles from our own stylesheet; forms post only to us; no framing.
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class Guard:
    """Checks credentials and CSRF tokens.

    The session cookie holds an expiry time signed with a key derived from the token, so it
    never contains the token and stops working when the token changes. CSRF tokens are the
    browser's random CSRF cookie signed with a key of this process (the "signed double
    submit" pattern): another site can neither read the cookie nor sign a value it planted.
    """

    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError("the dashboard token must not be empty")
        self.token = token
        self._session_key = hashlib.sha256(b"omniq-session:" + token.encode()).digest() \
            if token else b""
        self._csrf_key = secrets.token_bytes(32)

    @property
    def required(self) -> bool:
        """Whether pages need the token."""
        return self.token is not None

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison with the configured token."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def bearer_ok(self, request: Request) -> bool:
        """True if the request carries ``Authorization: Bearer <token>``."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def new_session(self, now: float | None = None) -> str:
        """A session cookie value valid for ``SESSION_SECONDS``."""
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        return f"{expires}.{_sign(self._session_key, f'session:{expires}')}"

    def session_ok(self, value: str | None, now: float | None = None) -> bool:
        """True for a session cookie this token signed that has not expired."""
        if not value or not self.required:
            return False
        expires, _, signature = value.partition(".")
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(signature, _sign(self._session_key, f"session:{expires}"))

    def authenticated(self, request: Request) -> bool:
        """True when no token is configured, or the request proves it knows the token."""
        if not self.required:
            return True
        return self.bearer_ok(request) or self.session_ok(request.cookies.get(SESSION_COOKIE))

    def csrf_token(self, cookie: str) -> str:
        """The form token that goes with the browser's CSRF cookie."""
        return _sign(self._csrf_key, f"csrf:{cookie}")

    def csrf_ok(self, request: Request, submitted: str | None) -> bool:
        """True if a form post comes from one of our pages: its token matches its CSRF
        cookie, and its Origin (when the browser sends one) is this site."""
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not submitted:
            return False
        if not hmac.compare_digest(submitted, self.csrf_token(cookie)):
            return False
        origin = request.headers.get("origin")
        if origin is None:  # browsers that send none: the signed token is proof enough
            return True
        return _same_origin(origin, request)


def _same_origin(origin: str, request: Request) -> bool:
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.scheme == request.url.scheme and parts.netloc.lower() == host.lower()


def safe_next(value: str | None, default: str = "/") -> str:
    """A redirect target inside the dashboard: a path starting with one ``/`` (never another
    site's address)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 32 for c in value):
        return default
    return value


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without the port (IPv6 in brackets kept bare)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Protect:
    """ASGI middleware: refuses Host headers outside ``allowed_hosts`` (DNS rebinding) and
    adds the security headers to every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host", ""))
        if self.allowed is not None and host not in self.allowed:
            await _plain(send, 400, b"Invalid host header")
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = Headers(raw=message["headers"])
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k not in headers]
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                    *((k.encode(), v.encode()) for k, v in HEADERS.items())],
    })
    await send({"type": "http.response.body", "body": body})
