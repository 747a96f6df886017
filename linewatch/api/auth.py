"""Bearer-token auth: `Authorization: Bearer <api.token>`, or the HttpOnly session cookie
that the dashboard's sign-in sets (a browser cannot add a header to EventSource or
<img>). The cookie holds an HMAC of the token, never the token itself.

Tokens are compared in constant time and never logged. With no token configured the API
is open, and `serve` binds 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request, status

from linewatch.pipeline.config import ApiSettings

COOKIE = "lw_session"
LOCAL_USER = "local"  # the reviewer name when no token is configured
_SESSION_CONTEXT = b"linewatch dashboard session v1"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def session_value(token: str) -> str:
    return hmac.new(token.encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


def bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def user_for(api: ApiSettings, token: str | None, cookie: str | None = None) -> str | None:
    """The configured user a bearer token or session cookie belongs to, else None."""
    if api.token is None:
        return LOCAL_USER
    secret = api.token.get_secret_value()
    if token is not None:
        return api.user if _same(token, secret) else None
    if cookie is not None:
        return api.user if _same(cookie, session_value(secret)) else None
    return None


def require_user(request: Request) -> str:
    """FastAPI dependency: the reviewer name, or 401 saying what was wrong."""
    token, cookie = bearer(request), request.cookies.get(COOKIE)
    user = user_for(request.app.state.ctx.settings.api, token, cookie)
    if user is None:
        problem = "missing bearer token" if token is None and cookie is None else "wrong token"
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"{problem}: send Authorization: Bearer <api.token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user
