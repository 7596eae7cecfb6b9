"""Safe by default: who may see the dashboard, and which POSTs are the user's own.

Credentials come from the environment, never from the command line (where ``ps`` shows them)
nor from the config file: ``CHORDLOAD_UI_USER`` and ``CHORDLOAD_UI_PASSWORD`` for HTTP basic
auth (browsers), and/or ``CHORDLOAD_UI_TOKEN`` for ``Authorization: Bearer`` (a Prometheus
scraper). Without any, ``chordload ui`` refuses to start unless told ``--local-only``.

Stop and Resume are POSTs that a page on another site could send with the user's stored
basic-auth credentials: each POST must come from this site (its ``Origin``, or failing that
its ``Referer``, is this server's own) and carry the per-session token that this site's
pages put in their forms (a cookie of this site that another site can neither read nor set).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import ConfigError

USER_ENV, PASSWORD_ENV, TOKEN_ENV = (
    "CHORDLOAD_UI_USER",
    "CHORDLOAD_UI_PASSWORD",
    "CHORDLOAD_UI_TOKEN",
)
CSRF_COOKIE = "chordload_csrf"
CSRF_FIELD = "csrf"
REALM = "chordload"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Credentials:
    """Who may use the dashboard; ``local_only`` with none: anyone who reaches the port."""

    user: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def required(self) -> bool:
        return bool(self.password or self.token)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        user, password = env.get(USER_ENV) or None, env.get(PASSWORD_ENV) or None
        token = env.get(TOKEN_ENV) or None
        if bool(user) != bool(password):
            missing = PASSWORD_ENV if user else USER_ENV
            raise ConfigError(
                f"{USER_ENV} and {PASSWORD_ENV} go together: set {missing} as well "
                f"(or neither, and use {TOKEN_ENV})"
            )
        return cls(user, password, token)

    def check(self, authorization: str | None) -> str | None:
        """The user an ``Authorization`` header proves, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return "token" if hmac.compare_digest(value.strip(), self.token) else None
        if scheme == "basic" and self.password:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            assert self.user is not None  # from_env sets both or neither
            ok_user = hmac.compare_digest(user.encode(), self.user.encode())
            ok_password = hmac.compare_digest(password.encode(), self.password.encode())
            return user if sep and ok_user and ok_password else None
        return None


def refuse_unsafe_start(credentials: Credentials, host: str, local_only: bool) -> None:
    """``chordload ui`` starts only with credentials, or ``--local-only`` on loopback."""
    if credentials.required:
        return
    if not local_only:
        raise ConfigError(
            f"chordload ui needs credentials: set {USER_ENV} and {PASSWORD_ENV} (basic "
            f"auth) and/or {TOKEN_ENV} (bearer token) in the environment, or pass "
            f"--local-only to serve without them on 127.0.0.1"
        )
    if host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"--local-only serves without credentials, so it binds loopback only, not "
            f"{host}: set {USER_ENV}/{PASSWORD_ENV} or {TOKEN_ENV} to serve on {host}"
        )


class AuthMiddleware:
    """401 with a basic-auth challenge for every request that proves no user; the user is
    put in ``scope["state"]["user"]`` (who stops a run is recorded)."""

    def __init__(self, app: ASGIApp, credentials: Credentials):
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = "local"
        if self.credentials.required:
            found = self.credentials.check(Headers(scope=scope).get("authorization"))
            if found is None:
                response = PlainTextResponse(
                    "401: credentials required",
                    status_code=401,
                    headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                )
                await response(scope, receive, send)
                return
            user = found
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


def csrf_token(request: Request) -> str:
    """This browser session's token (its cookie), or a new one that the response sets."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


def set_csrf_cookie(request: Request, response: Response) -> Response:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


def _own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}".lower()


def cross_site_refusal(request: Request, form_token: str | None) -> str | None:
    """Why this POST is refused as possibly cross-site, or None when it is this site's."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            return "the request names no Origin or Referer"
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin.lower() != _own_origin(request):
        return f"the request comes from {origin}, not from this site"
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not form_token or not hmac.compare_digest(cookie, form_token):
        return "the form's token does not match this session's (reload the page and try again)"
    return None
