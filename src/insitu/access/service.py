"""Account and token service functions. They never commit."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.access.models import ApiToken, Project, ProjectMember, ProjectRole, Role, User
from insitu.db import utcnow
from insitu.ledger import events
from insitu.ledger import service as ledger

TOKEN_PREFIX = "insitu_"  # noqa: S105 - a public prefix, not a secret
MIN_PASSWORD_LENGTH = 12
MAX_FAILED_LOGINS = 5
LOCKOUT = dt.timedelta(minutes=15)
DEFAULT_TOKEN_LIFETIME = dt.timedelta(days=30)
_hasher = PasswordHasher()
# Compared against when the account does not exist, so that a wrong name costs as much time
# as a wrong password and response times do not reveal which accounts exist.
_DUMMY_HASH = _hasher.hash("insitu-no-such-account")
_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")


class AccessError(ValueError):
    """A user or token request that cannot be fulfilled, with the reason."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated user and their role."""

    user_id: int
    name: str
    role: Role
    token_id: int = 0
    job_id: int | None = None
    """Set for a job-scoped token: it works only on that job's socket, for job calls."""
    login_due: bool = False
    """The token's first use today: ``record_login`` should put it on the ledger."""


JOB_TOKEN_LABEL = "job:"  # noqa: S105 - a label prefix, not a secret


def hash_token(token: str) -> str:
    """SHA-256 of a token; tokens carry 256 bits of randomness, so no slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise AccessError(f"role {role!r} is not one of: {allowed}") from None


def create_user(
    session: Session, name: str, role: Role | str, actor: str = ledger.HOST_ACTOR
) -> User:
    """Add a user. Names are lower-case handles, not personal names."""
    if not _NAME_RE.match(name):
        raise AccessError(
            f"user name {name!r} is not valid: use 2-64 characters a-z, 0-9, '.', '_', '-', "
            "starting with a letter"
        )
    role = _role(role)
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise AccessError(f"user {name!r} already exists")
    user = User(name=name, role=role, active=True)
    session.add(user)
    session.flush()
    ledger.record(
        session,
        events.ACCESS_USER_CREATED,
        actor=actor,
        subject=ledger.user_actor(user.id),
        payload={"role": role.value},
    )
    return user


def set_role(session: Session, user: User, role: Role | str, actor: str) -> None:
    """Change an account's role."""
    new_role = _role(role)
    if new_role == user.role:
        return
    old_role = user.role
    user.role = new_role
    ledger.record(
        session,
        events.ACCESS_ROLE_CHANGED,
        actor=actor,
        subject=ledger.user_actor(user.id),
        payload={"from": old_role.value, "to": new_role.value},
    )


def list_users(session: Session) -> list[User]:
    """Every account, by name (admins)."""
    return list(session.scalars(select(User).order_by(User.name)))


def deactivate_user(session: Session, user: User, actor: str) -> None:
    """Switch an account off: its tokens stop working."""
    if not user.active:
        return
    user.active = False
    ledger.record(
        session, events.ACCESS_USER_DEACTIVATED, actor=actor, subject=ledger.user_actor(user.id)
    )


def revoke_token(session: Session, prefix: str, actor: str) -> int:
    """Revoke the live tokens starting with ``prefix``; how many were revoked."""
    if not prefix.startswith(TOKEN_PREFIX) or len(prefix) < len(TOKEN_PREFIX) + 4:
        raise AccessError(f"give the token's first {len(TOKEN_PREFIX) + 4} characters or more")
    rows = session.scalars(
        select(ApiToken).where(
            ApiToken.prefix == prefix[: len(TOKEN_PREFIX) + 4], ApiToken.revoked_at.is_(None)
        )
    ).all()
    for row in rows:
        row.revoked_at = utcnow()
        ledger.record(
            session,
            events.ACCESS_TOKEN_REVOKED,
            actor=actor,
            subject=f"token:{row.id}",
            payload={"user": ledger.user_actor(row.user_id)},
        )
    return len(rows)


def issue_token(
    session: Session,
    user: User,
    label: str = "",
    expires_at: dt.datetime | None = None,
    actor: str = ledger.HOST_ACTOR,
    *,
    job_scoped: bool = False,
) -> str:
    """Create a token for ``user`` and return it; only its hash is stored."""
    if label.startswith(JOB_TOKEN_LABEL) and not job_scoped:
        raise AccessError(
            f"token labels may not start with {JOB_TOKEN_LABEL!r}: it marks job tokens"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        token_hash=hash_token(token),
        prefix=token[: len(TOKEN_PREFIX) + 4],
        label=label,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    ledger.record(
        session,
        events.ACCESS_TOKEN_CREATED,
        actor=actor,
        subject=f"token:{row.id}",
        payload={"user": ledger.user_actor(user.id), "expires": expires_at is not None},
    )
    return token


def authenticate_token(session: Session, token: str) -> Principal | None:
    """The principal a token belongs to, or None if it is unknown, expired or revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    user = row.user
    if not user.active:
        return None
    job_id = int(row.label[4:]) if row.label.startswith(JOB_TOKEN_LABEL) else None
    return Principal(
        user_id=user.id,
        name=user.name,
        role=user.role,
        token_id=row.id,
        login_due=row.last_login_on != utcnow().date().isoformat() and job_id is None,
        job_id=job_id,
    )


def issue_job_token(session: Session, user_id: int, job_id: int, expires_at: dt.datetime) -> str:
    """A token for one job's sandbox: it works only on that job's socket, and ends with it."""
    user = session.get(User, user_id)
    if user is None:
        raise AccessError(f"no user {user_id}")
    return issue_token(session, user, f"{JOB_TOKEN_LABEL}{job_id}", expires_at, job_scoped=True)


def revoke_job_tokens(session: Session, job_id: int) -> int:
    """Revoke a job's tokens when it ends; how many."""
    rows = session.scalars(
        select(ApiToken).where(
            ApiToken.label == f"{JOB_TOKEN_LABEL}{job_id}", ApiToken.revoked_at.is_(None)
        )
    ).all()
    for row in rows:
        row.revoked_at = utcnow()
    if rows:
        ledger.record(
            session,
            events.ACCESS_TOKEN_REVOKED,
            actor=ledger.HOST_ACTOR,
            subject=f"token:{rows[0].id}",
            payload={"job": job_id, "tokens": len(rows)},
        )
    return len(rows)


def record_login(session: Session, principal: Principal) -> None:
    """Put a token's first use of the day on the ledger (in its own short transaction, so
    that a read-only request does not hold a write lock)."""
    row = session.get(ApiToken, principal.token_id)
    today = utcnow().date().isoformat()
    if row is None or row.last_login_on == today:
        return
    row.last_login_on = today
    ledger.record(
        session,
        events.ACCESS_LOGIN,
        actor=ledger.user_actor(principal.user_id),
        subject=f"token:{row.id}",
    )


def get_user(session: Session, name: str) -> User | None:
    """The user with this name, if any."""
    return session.scalar(select(User).where(User.name == name))


def get_user_by_id(session: Session, user_id: int) -> User | None:
    """The user with this id, if any."""
    return session.get(User, user_id)


def has_users(session: Session) -> bool:
    """Whether any account exists (``init`` creates the first admin only once)."""
    return session.scalar(select(User.id).limit(1)) is not None


def set_password(session: Session, user: User, password: str, actor: str) -> None:
    """Give an account a password (argon2id); unlocks it."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccessError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    ledger.record(
        session, events.ACCESS_PASSWORD_SET, actor=actor, subject=ledger.user_actor(user.id)
    )


@dataclass(frozen=True)
class LoginOutcome:
    """What a password login attempt gave: the user, or why not (and until when locked).

    Returned rather than raised: a failed attempt changes the account (failure count, lockout)
    and writes ledger entries, and those must commit even though the login is refused.
    """

    user: User | None
    refusal: str = ""
    locked_until: dt.datetime | None = None


WRONG_CREDENTIALS = "wrong account name or password"


def login_with_password(
    session: Session, name: str, password: str, now: dt.datetime | None = None
) -> LoginOutcome:
    """Check a name and password. Failures count towards a lockout, and failures of existing
    accounts and lockouts go to the ledger; unknown names are not recorded (no names on the
    ledger) and take as long as a wrong password."""
    now = now or utcnow()
    user = get_user(session, name)
    if user is None or user.password_hash is None or not user.active:
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_DUMMY_HASH, password)
        return LoginOutcome(None, WRONG_CREDENTIALS)
    if user.locked_until is not None and user.locked_until > now:
        return LoginOutcome(
            None,
            "this account is locked after repeated failed logins; try again after "
            f"{user.locked_until:%H:%M} UTC or ask an admin to set a new password",
            user.locked_until,
        )
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        _record_failure(session, user, now)
        if user.locked_until is not None and user.locked_until > now:
            return LoginOutcome(
                None,
                f"{WRONG_CREDENTIALS}; after repeated failures the account is locked until "
                f"{user.locked_until:%H:%M} UTC",
                user.locked_until,
            )
        return LoginOutcome(None, WRONG_CREDENTIALS)
    user.failed_logins = 0
    user.locked_until = None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    ledger.record(
        session,
        events.ACCESS_LOGIN,
        actor=ledger.user_actor(user.id),
        subject=ledger.user_actor(user.id),
        payload={"method": "password"},
    )
    return LoginOutcome(user)


def login_for_token(
    session: Session, name: str, password: str, label: str, expires_at: dt.datetime
) -> tuple[LoginOutcome, str | None]:
    """A password login that issues a token expiring at ``expires_at`` on success (API and
    browser).
    The caller commits whatever the outcome: failures and lockouts must stay."""
    outcome = login_with_password(session, name, password)
    if outcome.user is None:
        return outcome, None
    token = issue_token(
        session, outcome.user, label, expires_at, actor=ledger.user_actor(outcome.user.id)
    )
    return outcome, token


def _record_failure(session: Session, user: User, now: dt.datetime) -> None:
    user.failed_logins += 1
    ledger.record(
        session,
        events.ACCESS_LOGIN_FAILED,
        actor="anonymous",
        subject=ledger.user_actor(user.id),
        payload={"failures": user.failed_logins},
    )
    if user.failed_logins >= MAX_FAILED_LOGINS:
        user.locked_until = now + LOCKOUT
        user.failed_logins = 0
        ledger.record(
            session,
            events.ACCESS_LOCKED,
            actor="anonymous",
            subject=ledger.user_actor(user.id),
            payload={"minutes": int(LOCKOUT.total_seconds() // 60)},
        )


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    """An account's tokens, newest first (hashes are never shown)."""
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
        )
    )


def revoke_token_by_id(session: Session, principal: Principal, token_id: int) -> None:
    """Revoke one of the caller's own tokens (admins: anyone's)."""
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != principal.user_id and principal.role != Role.admin):
        raise AccessError(f"no token {token_id} of yours")
    if row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    ledger.record(
        session,
        events.ACCESS_TOKEN_REVOKED,
        actor=ledger.user_actor(principal.user_id),
        subject=f"token:{row.id}",
        payload={"user": ledger.user_actor(row.user_id)},
    )


# -- projects ------------------------------------------------------------------------------------

_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


def create_project(
    session: Session, name: str, title: str, actor: str, idp_group: str | None = None
) -> Project:
    """A new project (admins)."""
    if not _PROJECT_RE.match(name):
        raise AccessError(
            f"project name {name!r} is not valid: use 2-64 characters a-z, 0-9, '.', '_', '-'"
        )
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise AccessError(f"project {name!r} already exists")
    project = Project(name=name, title=title, idp_group=idp_group)
    session.add(project)
    session.flush()
    ledger.record(
        session,
        events.PROJECT_CREATED,
        actor=actor,
        subject=f"project:{project.id}",
        payload={"idp_group_mapped": idp_group is not None},
    )
    return project


def get_project(session: Session, name: str) -> Project | None:
    """The project with this name, if any."""
    return session.scalar(select(Project).where(Project.name == name))


def project_role(session: Session, project: Project, user_id: int) -> ProjectRole | None:
    """A user's role in a project, or None when not a member."""
    return session.scalar(
        select(ProjectMember.role).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user_id
        )
    )


def can_see_project(session: Session, principal: Principal, project: Project) -> bool:
    """Admins see every project; others only their own."""
    return (
        principal.role == Role.admin
        or project_role(session, project, principal.user_id) is not None
    )


def can_manage_project(session: Session, principal: Principal, project: Project) -> bool:
    """Admins and the project's leads manage its membership."""
    return (
        principal.role == Role.admin
        or project_role(session, project, principal.user_id) == ProjectRole.lead
    )


def list_projects(session: Session, principal: Principal) -> list[Project]:
    """The projects a caller may see."""
    statement = select(Project).order_by(Project.name)
    if principal.role != Role.admin:
        statement = statement.join(ProjectMember, ProjectMember.project_id == Project.id).where(
            ProjectMember.user_id == principal.user_id
        )
    return list(session.scalars(statement))


def project_members(session: Session, project: Project) -> list[tuple[str, ProjectRole]]:
    """(user name, role) of a project's members."""
    rows = session.execute(
        select(User.name, ProjectMember.role)
        .join(ProjectMember, ProjectMember.user_id == User.id)
        .where(ProjectMember.project_id == project.id)
        .order_by(User.name)
    ).all()
    return [(str(name), ProjectRole(role)) for name, role in rows]


def add_member(
    session: Session, project: Project, user: User, role: ProjectRole | str, actor: str
) -> None:
    """Put a user in a project with a role (or change their role)."""
    try:
        role = ProjectRole(role)
    except ValueError:
        raise AccessError(f"project role {role!r} is not one of: lead, member") from None
    member = session.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user.id
        )
    )
    if member is not None and member.role == role:
        return
    if member is None:
        session.add(ProjectMember(project_id=project.id, user_id=user.id, role=role))
    else:
        member.role = role
    ledger.record(
        session,
        events.PROJECT_MEMBER_ADDED,
        actor=actor,
        subject=f"project:{project.id}",
        payload={"user": ledger.user_actor(user.id), "role": role.value},
    )


def remove_member(session: Session, project: Project, user: User, actor: str) -> None:
    """Take a user out of a project."""
    member = session.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user.id
        )
    )
    if member is None:
        raise AccessError(f"{user.name} is not in project {project.name}")
    session.delete(member)
    ledger.record(
        session,
        events.PROJECT_MEMBER_REMOVED,
        actor=actor,
        subject=f"project:{project.id}",
        payload={"user": ledger.user_actor(user.id)},
    )


# -- single sign-on --------------------------------------------------------------------------


def _free_name(session: Session, wanted: str) -> str:
    base = re.sub(r"[^a-z0-9._-]", "-", wanted.lower()).strip("-._") or "user"
    if not base[0].isalpha():
        base = "u-" + base
    base = base[:56]
    name = base if len(base) > 1 else base + "-1"
    suffix = 1
    while get_user(session, name) is not None:
        suffix += 1
        name = f"{base}-{suffix}"
    return name


def sso_login(
    session: Session, subject: str, username: str, role: Role, groups: Sequence[str]
) -> User:
    """Sign in an identity-provider user: created on first login, role refreshed each time,
    projects mapped from groups kept in step. Everything goes to the ledger."""
    user = session.scalar(select(User).where(User.idp_subject == subject))
    if user is None:
        user = create_user(session, _free_name(session, username), role, actor=ledger.HOST_ACTOR)
        user.idp_subject = subject
    elif not user.active:
        raise AccessError("this account is deactivated: ask an admin")
    else:
        set_role(session, user, role, actor=ledger.HOST_ACTOR)
    mapped = session.scalars(select(Project).where(Project.idp_group.is_not(None))).all()
    for project in mapped:
        current = project_role(session, project, user.id)
        if project.idp_group in groups and current is None:
            add_member(session, project, user, ProjectRole.member, ledger.HOST_ACTOR)
        elif project.idp_group not in groups and current == ProjectRole.member:
            remove_member(session, project, user, ledger.HOST_ACTOR)
    ledger.record(
        session,
        events.ACCESS_LOGIN,
        actor=ledger.user_actor(user.id),
        subject=ledger.user_actor(user.id),
        payload={"method": "oidc"},
    )
    return user


def user_names(session: Session, user_ids: set[int]) -> dict[int, str]:
    """Account names for ids (for the auditors' access log, inside the platform)."""
    if not user_ids:
        return {}
    rows = session.execute(select(User.id, User.name).where(User.id.in_(user_ids))).all()
    return {int(user_id): str(name) for user_id, name in rows}


def project_names(session: Session, project_ids: set[int]) -> dict[int, str]:
    """Project names for ids (for a dataset's grant list)."""
    if not project_ids:
        return {}
    rows = session.execute(
        select(Project.id, Project.name).where(Project.id.in_(project_ids))
    ).all()
    return {int(project_id): str(name) for project_id, name in rows}


def project_ids_of(session: Session, user_id: int) -> set[int]:
    """Ids of the projects a user belongs to."""
    rows = session.scalars(
        select(ProjectMember.project_id).where(ProjectMember.user_id == user_id)
    ).all()
    return {int(project_id) for project_id in rows}
