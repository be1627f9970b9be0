"""Access routes: who am I, password login for a token, the caller's own tokens, projects."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AfterValidator, BaseModel, Field

from insitu.access import service
from insitu.access.models import Project, Role
from insitu.access.permissions import Admin, AnyUser, DbSession, Public, get_platform, require
from insitu.access.ratelimit import SlidingWindowLimiter
from insitu.core.platform import Platform
from insitu.db import session_scope, utcnow
from insitu.ledger import service as ledger

router = APIRouter(tags=["access"])


class WhoAmI(BaseModel):
    """The caller."""

    name: str
    role: str


def _not_a_job_label(label: str) -> str:
    if label.startswith(service.JOB_TOKEN_LABEL):
        raise ValueError(
            f"labels may not start with {service.JOB_TOKEN_LABEL!r}: it marks job tokens"
        )
    return label


class PasswordLogin(BaseModel):
    """A password login that asks for an API token."""

    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    label: Annotated[str, AfterValidator(_not_a_job_label)] = Field(default="login", max_length=64)
    expires_days: int = Field(default=30, ge=1, le=365)


class NewToken(BaseModel):
    """A token to create for oneself."""

    label: Annotated[str, AfterValidator(_not_a_job_label)] = Field(default="", max_length=64)
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
    expires_at = utcnow() + dt.timedelta(days=body.expires_days)
    with session_scope(platform.sessions) as session:
        outcome, token = service.login_for_token(
            session, body.name, body.password, body.label, expires_at
        )
        user = outcome.user
        issued = (
            IssuedToken(
                token=token,
                name=user.name,
                role=user.role.value,
                expires_at=expires_at,
            )
            if user is not None and token is not None
            else None
        )
    if issued is None:
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
    try:
        token = service.issue_token(
            session, user, body.label, expires_at, actor=ledger.user_actor(user.id)
        )
    except service.AccessError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return IssuedToken(token=token, name=user.name, role=user.role.value, expires_at=expires_at)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: int, principal: AnyUser, session: DbSession) -> None:
    """Revoke one of the caller's tokens (admins: anyone's)."""
    try:
        service.revoke_token_by_id(session, principal, token_id)
    except service.AccessError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None


class ProjectInfo(BaseModel):
    """A project and its members."""

    name: str
    title: str
    idp_group: str | None
    members: list[dict[str, str]]


class NewProject(BaseModel):
    """A project to create."""

    name: str = Field(max_length=64)
    title: str = Field(default="", max_length=200)
    idp_group: str | None = Field(default=None, max_length=200)


class Membership(BaseModel):
    """A user to put in a project."""

    user: str = Field(max_length=64)
    role: str = Field(default="member", pattern="^(lead|member)$")


def _project_info(session: DbSession, project: Project) -> ProjectInfo:
    return ProjectInfo(
        name=project.name,
        title=project.title,
        idp_group=project.idp_group,
        members=[
            {"user": name, "role": role.value}
            for name, role in service.project_members(session, project)
        ],
    )


def _visible_project(session: DbSession, principal: service.Principal, name: str) -> Project:
    project = service.get_project(session, name)
    # One answer for "missing" and "not yours", so names cannot be probed.
    if project is None or not service.can_see_project(session, principal, project):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"no project {name!r} of yours")
    return project


def _managed_project(session: DbSession, principal: service.Principal, name: str) -> Project:
    project = _visible_project(session, principal, name)
    if not service.can_manage_project(session, principal, project):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"only admins and leads of {name!r} manage its members",
        )
    return project


@router.get("/projects")
def list_projects(principal: AnyUser, session: DbSession) -> list[ProjectInfo]:
    """Your projects (admins: all)."""
    return [_project_info(session, p) for p in service.list_projects(session, principal)]


@router.post("/projects", status_code=status.HTTP_201_CREATED)
def create_project(body: NewProject, principal: Admin, session: DbSession) -> ProjectInfo:
    """Create a project (admins)."""
    try:
        project = service.create_project(
            session, body.name, body.title, ledger.user_actor(principal.user_id), body.idp_group
        )
    except service.AccessError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return _project_info(session, project)


@router.get("/projects/{name}")
def show_project(name: str, principal: AnyUser, session: DbSession) -> ProjectInfo:
    """A project you belong to (admins: any)."""
    return _project_info(session, _visible_project(session, principal, name))


@router.post("/projects/{name}/members")
def add_member(name: str, body: Membership, principal: AnyUser, session: DbSession) -> ProjectInfo:
    """Put a user in the project, as lead or member (admins and the project's leads)."""
    project = _managed_project(session, principal, name)
    user = service.get_user(session, body.user)
    if user is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"no user {body.user!r}")
    service.add_member(session, project, user, body.role, ledger.user_actor(principal.user_id))
    return _project_info(session, project)


@router.delete("/projects/{name}/members/{user_name}")
def remove_member(name: str, user_name: str, principal: AnyUser, session: DbSession) -> ProjectInfo:
    """Take a user out of the project (admins and the project's leads)."""
    project = _managed_project(session, principal, name)
    user = service.get_user(session, user_name)
    if user is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"no user {user_name!r}")
    try:
        service.remove_member(session, project, user, ledger.user_actor(principal.user_id))
    except service.AccessError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return _project_info(session, project)


Auditor = Annotated[service.Principal, Depends(require(Role.auditor, Role.admin))]
_USER_ID = re.compile(r"^user:(\d+)$")


@router.get("/audit/access-log")
def access_log(
    _principal: Auditor,
    session: DbSession,
    start: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, object]]:
    """Sign-ins, failed sign-ins, lockouts, account, token and project changes, with the
    pseudonymous ids of the public ledger resolved to account names (auditors and admins)."""
    entries = ledger.list_entries(session, start, limit, type_prefix="access.")
    ids = {
        int(match.group(1))
        for entry in entries
        for value in (entry.actor, entry.subject)
        if (match := _USER_ID.match(value))
    }
    names = service.user_names(session, ids)

    def who(value: str) -> str:
        match = _USER_ID.match(value)
        return names.get(int(match.group(1)), value) if match else value

    return [
        {
            **ledger.entry_as_dict(entry),
            "actor_name": who(entry.actor),
            "subject_name": who(entry.subject),
        }
        for entry in entries
    ]
