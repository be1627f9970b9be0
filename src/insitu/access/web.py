"""Browser sign-in and sign-out: a form, a session cookie, CSRF tokens.

The session cookie holds a 12-hour API token of its own (label ``browser``), so a browser
session is authenticated, expired and revoked exactly like any token, and signing out revokes
it. The sign-in form is protected by a double-submit CSRF token (a random value in a
SameSite=Strict cookie and in the form), pages after sign-in by ``permissions.csrf_token_for``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from insitu.access import oidc, service
from insitu.access.permissions import (
    SESSION_COOKIE,
    AnyUser,
    Public,
    csrf_token_for,
    get_platform,
)
from insitu.access.ratelimit import SlidingWindowLimiter
from insitu.core.platform import Platform
from insitu.db import session_scope, utcnow
from insitu.ledger import service as ledger
from insitu.web.render import templates

router = APIRouter(tags=["pages"], include_in_schema=False)
LOGIN_CSRF_COOKIE = "insitu_login_csrf"
SESSION_LIFETIME = dt.timedelta(hours=12)
PlatformDep = Annotated[Platform, Depends(get_platform)]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(c in target for c in "\r\n")
    ):
        return "/"
    return target


def _set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int,
    path: str,
    samesite: Literal["lax", "strict"] = "lax",
) -> None:
    """Every cookie of ours: HttpOnly, SameSite, Secure whenever the request came over TLS."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite=samesite,
        secure=request.url.scheme == "https",
        max_age=max_age,
        path=path,
    )


def _login_page(
    request: Request,
    *,
    next_path: str,
    error: str = "",
    name: str = "",
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    login_csrf = secrets.token_urlsafe(32)
    platform: Platform = request.app.state.platform
    response = templates(request).TemplateResponse(
        request,
        "login.html",
        {
            "login_csrf": login_csrf,
            "next": next_path,
            "error": error,
            "name": name,
            "oidc": oidc.enabled(platform.settings),
        },
        status_code=status_code,
    )
    _set_cookie(
        request,
        response,
        LOGIN_CSRF_COOKIE,
        login_csrf,
        max_age=3600,
        path="/login",
        samesite="strict",
    )
    return response


@router.get("/login", dependencies=[Public], response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    """The sign-in form."""
    return _login_page(request, next_path=safe_next(next))


@router.post("/login", dependencies=[Public], response_model=None)
async def login_submit(
    request: Request,
    platform: PlatformDep,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    """Check the form; on success set the session cookie and go on to ``next``."""
    next_path = safe_next(next)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf_token):
        return _login_page(
            request,
            next_path=next_path,
            error="The form expired or did not come from this site: please sign in again.",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    limiter: SlidingWindowLimiter = request.app.state.login_limiter
    client = request.client.host if request.client else "unknown"
    if limiter.retry_after(client) is not None:
        return _login_page(
            request,
            next_path=next_path,
            name=name,
            error="Too many sign-in attempts from this address: wait a minute and try again.",
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        )
    result = await run_in_threadpool(_sign_in, platform, name, password)
    if isinstance(result, service.LoginOutcome):
        code = status.HTTP_403_FORBIDDEN if result.locked_until else status.HTTP_401_UNAUTHORIZED
        return _login_page(
            request, next_path=next_path, name=name, error=result.refusal, status_code=code
        )
    response = _signed_in(request, result, next_path)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def _signed_in(request: Request, session_token: str, next_path: str) -> Response:
    response = RedirectResponse(next_path, status_code=status.HTTP_303_SEE_OTHER)
    lifetime = int(SESSION_LIFETIME.total_seconds())
    _set_cookie(request, response, SESSION_COOKIE, session_token, max_age=lifetime, path="/")
    return response


@router.get("/login/oidc", dependencies=[Public], response_model=None)
async def oidc_begin(
    request: Request,
    platform: PlatformDep,
    next: str | None = None,
) -> Response:
    """Go to the institution's identity provider (authorization code flow with PKCE)."""
    settings = platform.settings
    if not oidc.enabled(settings):
        return _login_page(
            request,
            next_path=safe_next(next),
            error="Single sign-on is not configured here.",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    callback = str(request.url_for("oidc_callback"))
    try:
        url, cookie = await run_in_threadpool(oidc.begin, settings, callback, safe_next(next))
    except oidc.OidcError as exc:
        return _login_page(request, next_path=safe_next(next), error=str(exc), status_code=502)
    response = RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)
    # Lax: it must come back with the provider's top-level redirect to the callback.
    _set_cookie(
        request,
        response,
        oidc.STATE_COOKIE,
        cookie,
        max_age=oidc.STATE_LIFETIME_SECONDS,
        path="/login/oidc",
    )
    return response


@router.get("/login/oidc/callback", dependencies=[Public], response_model=None)
async def oidc_callback(
    request: Request,
    platform: PlatformDep,
    state: str | None = None,
    code: str | None = None,
) -> Response:
    """Back from the identity provider: verify, sign in (creating the account on first use)."""
    settings = platform.settings
    cookie = request.cookies.get(oidc.STATE_COOKIE)
    try:
        identity, next_path = await run_in_threadpool(oidc.finish, settings, cookie, state, code)
        session_token = await run_in_threadpool(_sso_sign_in, platform, identity)
    except (oidc.OidcError, service.AccessError) as exc:
        response: Response = _login_page(
            request, next_path="/", error=str(exc), status_code=status.HTTP_403_FORBIDDEN
        )
    else:
        response = _signed_in(request, session_token, safe_next(next_path))
    response.delete_cookie(oidc.STATE_COOKIE, path="/login/oidc")  # one use only
    return response


def _sso_sign_in(platform: Platform, identity: oidc.Identity) -> str:
    with session_scope(platform.sessions) as session:
        user = service.sso_login(
            session, identity.subject, identity.username, identity.role, identity.groups
        )
        return service.issue_token(
            session,
            user,
            "browser",
            utcnow() + SESSION_LIFETIME,
            actor=ledger.user_actor(user.id),
        )


def _sign_in(platform: Platform, name: str, password: str) -> str | service.LoginOutcome:
    # Its own transaction, committed whatever the outcome: failures and lockouts must stay.
    with session_scope(platform.sessions) as session:
        outcome, token = service.login_for_token(
            session, name, password, "browser", utcnow() + SESSION_LIFETIME
        )
    return outcome if token is None else token


@router.post("/logout", response_model=None)
def logout(principal: AnyUser, platform: PlatformDep) -> Response:
    """Sign out: the session's token is revoked, the cookie removed."""
    with session_scope(platform.sessions) as session:
        service.revoke_token_by_id(session, principal, principal.token_id)
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def page_context(platform: Platform, principal: service.Principal, token: str) -> dict[str, Any]:
    """What every signed-in page's template needs."""
    return {"principal": principal, "csrf_token": csrf_token_for(platform, token)}


def page_principal(request: Request, session: Any) -> tuple[service.Principal | None, str]:
    """A page's signed-in user from the session cookie (or a bearer token, for scripts and
    tests), with the token; (None, "") when nobody is signed in."""
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    token = bearer if scheme.lower() == "bearer" else request.cookies.get(SESSION_COOKIE, "")
    return (service.authenticate_token(session, token) if token else None), token


def to_sign_in(path: str) -> RedirectResponse:
    """Send a visitor who is not signed in to the sign-in page, and back here after."""
    return RedirectResponse(f"/login?next={path}", status_code=status.HTTP_303_SEE_OTHER)
