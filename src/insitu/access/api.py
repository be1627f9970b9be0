"""Access routes: who am I, password login for a token, and the caller's own tokens."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from insitu.access import service
from insitu.access.permissions import AnyUser, DbSession, Public, get_platform
from insitu.access.ratelimit import SlidingWindowLimiter
from insitu.core.platform import Platform
from insitu.db import session_scope, utcnow
from insitu.ledger import service as ledger

router = APIRouter(tags=["access"])


class WhoAmI(BaseModel):
    """The caller."""

    name: str
    role: str


class PasswordLogin(BaseModel):
    """A password login that asks for an API token."""

    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    label: str = Field(default="login", max_length=64)
    expires_days: int = Field(default=30, ge=1, le=365)


class NewToken(BaseModel):
    """A token to create for oneself."""

    label: str = Field(default="", max_length=64)
    expires_days: int = Field(default=30, ge=1, le=365)


class IssuedToken(BaseModel):
    """A new token: shown this once."""

    token: str
    name: str
    role: str
    expires_at: dt.datetime


class TokenInfo(BaseModel):
    """One token, without its secret."""

    id: int
    prefix: str
    label: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_login_on: str | None


def login_limiter(request: Request) -> SlidingWindowLimiter:
    """The app's login rate limiter."""
    limiter: SlidingWindowLimiter = request.app.state.login_limiter
    return limiter


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: AnyUser) -> WhoAmI:
    """Who the token belongs to."""
    return WhoAmI(name=principal.name, role=principal.role.value)


@router.post("/auth/token", dependencies=[Public], status_code=status.HTTP_201_CREATED)
def password_login(
    body: PasswordLogin,
    request: Request,
    platform: Annotated[Platform, Depends(get_platform)],
    limiter: Annotated[SlidingWindowLimiter, Depends(login_limiter)],
) -> IssuedToken:
    """Log in with an account name and password; get a personal API token (``insitu login``).
    Rate limited per client address; repeated failures lock the account for a while."""
    client = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="too many login attempts from this address; wait and try again",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    # Its own transaction, committed whatever the outcome: failures and lockouts must stay.
    with session_scope(platform.sessions) as session:
        outcome = service.login_with_password(session, body.name, body.password)
        user = outcome.user
        if user is not None:
            expires_at = utcnow() + dt.timedelta(days=body.expires_days)
            token = service.issue_token(
                session, user, body.label, expires_at, actor=ledger.user_actor(user.id)
            )
            issued = IssuedToken(
                token=token, name=user.name, role=user.role.value, expires_at=expires_at
            )
    if user is None:
        code = status.HTTP_403_FORBIDDEN if outcome.locked_until else status.HTTP_401_UNAUTHORIZED
        raise HTTPException(code, detail=outcome.refusal)
    return issued


@router.get("/tokens")
def list_tokens(principal: AnyUser, session: DbSession) -> list[TokenInfo]:
    """The caller's own tokens (never their secrets)."""
    return [
        TokenInfo(
            id=row.id,
            prefix=row.prefix,
            label=row.label,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_login_on=row.last_login_on,
        )
        for row in service.list_tokens(session, principal.user_id)
    ]


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(body: NewToken, principal: AnyUser, session: DbSession) -> IssuedToken:
    """A new token for the caller, with an expiry; shown once."""
    user = service.get_user_by_id(session, principal.user_id)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="your account is gone")
    expires_at = utcnow() + dt.timedelta(days=body.expires_days)
    token = service.issue_token(
        session, user, body.label, expires_at, actor=ledger.user_actor(user.id)
    )
    return IssuedToken(token=token, name=user.name, role=user.role.value, expires_at=expires_at)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: int, principal: AnyUser, session: DbSession) -> None:
    """Revoke one of the caller's tokens (admins: anyone's)."""
    try:
        service.revoke_token_by_id(session, principal, token_id)
    except service.AccessError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None
