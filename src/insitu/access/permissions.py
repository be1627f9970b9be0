"""The one permission dependency every route declares.

A route either depends on ``require(...)`` (an authenticated principal with one of the roles)
or on ``public`` (no login needed). ``tests/access/test_routes.py`` walks the app and fails for
any route that declares neither, so a new route cannot forget.

Credentials are a bearer token (CLI, jobs) or the browser's session cookie, which holds a
short-lived token of its own. Cookie-authenticated requests that change something must carry
the CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field): an HMAC of the session
token with the deployment secret, so another site can neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from insitu.access.models import Role
from insitu.access.service import Principal, authenticate_token, record_login
from insitu.core.platform import Platform
from insitu.db import session_scope

PERMISSION_MARKER = "__insitu_permission__"
SESSION_COOKIE = "insitu_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_bearer = HTTPBearer(auto_error=False, description="A personal API token: `insitu_...`")


def get_platform(request: Request) -> Platform:
    """The deployment the app serves."""
    platform: Platform = request.app.state.platform
    return platform


def get_session(platform: Annotated[Platform, Depends(get_platform)]) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns without error.

    The dependency is function-scoped so the commit happens before the response is sent:
    a client that follows a redirect, or sends its next request at once, must see the change,
    and a failed commit must answer 500 rather than a success already on the wire.
    """
    with session_scope(platform.sessions) as session:
        yield session


DbSession = Annotated[Session, Depends(get_session, scope="function")]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def csrf_token_for(platform: Platform, session_token: str) -> str:
    """The CSRF token that goes with a browser session."""
    return hmac.new(
        platform.settings.secret_bytes(), b"csrf:" + session_token.encode(), hashlib.sha256
    ).hexdigest()


async def _check_csrf(request: Request, platform: Platform, session_token: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        field = (await request.form()).get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if sent is None or not hmac.compare_digest(sent, csrf_token_for(platform, session_token)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="CSRF token missing or wrong: reload the page and try again",
        )


def _session_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The bearer token, else the session cookie's; '' when there is neither."""
    if credentials is not None:
        return credentials.credentials
    return request.cookies.get(SESSION_COOKIE, "")


def _authenticate(session: Session, token: str) -> Principal:
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="login required: send 'Authorization: Bearer <token>' with a personal API "
            "token (insitu user add prints one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = authenticate_token(session, token)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="the API token is unknown, expired or revoked: ask an admin for a new one",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def _record_login(platform: Platform, principal: Principal) -> None:
    with session_scope(platform.sessions) as login_session:
        record_login(login_session, principal)


JOB_TOKEN_PATHS = ("/api/v1/jobs", "/api/v1/flavors", "/api/v1/whoami")


def _check_job_scope(request: Request, principal: Principal) -> None:
    """A job's socket takes only that job's token, and a job token works only there, for job
    calls: nothing else in the platform answers a job (its results leave only as a release
    request made when it ends)."""
    socket_job = getattr(request.app.state, "job_socket", None)
    socket_owner = getattr(request.app.state, "job_owner", None)
    if socket_job is not None and (
        principal.job_id != socket_job or principal.user_id != socket_owner
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="this socket takes only its job's token"
        )
    if principal.job_id is not None and socket_job is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a job token works only on its job's socket (/run/insitu.sock)",
        )
    if principal.job_id is not None and not request.url.path.startswith(JOB_TOKEN_PATHS):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="from inside a job, only job calls are allowed",
        )


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting authenticated users with one of ``roles`` (any role if none)."""
    allowed = frozenset(roles)

    async def dependency(
        request: Request,
        session: DbSession,
        credentials: Credentials,
        platform: Annotated[Platform, Depends(get_platform)],
    ) -> Principal:
        token = _session_token(request, credentials)
        if credentials is None and token and request.method in UNSAFE_METHODS:
            await _check_csrf(request, platform, token)
        principal = await run_in_threadpool(_authenticate, session, token)
        _check_job_scope(request, principal)
        if principal.login_due:
            await run_in_threadpool(_record_login, platform, principal)
        if allowed and principal.role not in allowed:
            needed = " or ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"forbidden: this needs the {needed} role; you are {principal.role.value}",
            )
        return principal

    setattr(dependency, PERMISSION_MARKER, tuple(sorted(r.value for r in allowed)) or ("any",))
    return dependency


def public() -> None:
    """Declares a route open to anonymous callers."""


setattr(public, PERMISSION_MARKER, ("public",))


async def optional_principal(
    request: Request, session: DbSession, credentials: Credentials
) -> Principal | None:
    """A public route's caller if they sent valid credentials, else None (never 401): public
    pages show more to those who may see more."""
    token = _session_token(request, credentials)
    if not token:
        return None
    return await run_in_threadpool(authenticate_token, session, token)


setattr(optional_principal, PERMISSION_MARKER, ("public",))

AnyUser = Annotated[Principal, Depends(require())]
MaybeUser = Annotated[Principal | None, Depends(optional_principal)]
Steward = Annotated[Principal, Depends(require(Role.steward))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
Public = Depends(public)


def iter_api_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute with its full path, also inside included routers (FastAPI keeps
    included routers as nodes of their own in recent versions)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
            continue
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from iter_api_routes(included.routes, prefix + getattr(context, "prefix", ""))


def route_permission(dependant: Any) -> tuple[str, ...] | None:
    """The permission a route's dependency tree declares, if any (used by the route test)."""
    for dep in dependant.dependencies:
        marker = getattr(dep.call, PERMISSION_MARKER, None)
        if marker is not None:
            return tuple(marker)
    return None
