"""Account and token service functions. They never commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.access.models import ApiToken, Role, User
from insitu.db import utcnow
from insitu.ledger import events
from insitu.ledger import service as ledger

TOKEN_PREFIX = "insitu_"  # noqa: S105 - a public prefix, not a secret
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
    login_due: bool = False
    """The token's first use today: ``record_login`` should put it on the ledger."""


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
) -> str:
    """Create a token for ``user`` and return it; only its hash is stored."""
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
    return Principal(
        user_id=user.id,
        name=user.name,
        role=user.role,
        token_id=row.id,
        login_due=row.last_login_on != utcnow().date().isoformat(),
    )


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


def has_users(session: Session) -> bool:
    """Whether any account exists (``init`` creates the first admin only once)."""
    return session.scalar(select(User.id).limit(1)) is not None
