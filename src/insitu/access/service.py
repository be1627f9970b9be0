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


def hash_token(token: str) -> str:
    """SHA-256 of a token; tokens carry 256 bits of randomness, so no slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, name: str, role: Role | str) -> User:
    """Add a user. Names are lower-case handles, not personal names."""
    if not _NAME_RE.match(name):
        raise AccessError(
            f"user name {name!r} is not valid: use 2-64 characters a-z, 0-9, '.', '_', '-', "
            "starting with a letter"
        )
    try:
        role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise AccessError(f"role {role!r} is not one of: {allowed}") from None
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise AccessError(f"user {name!r} already exists")
    user = User(name=name, role=role, active=True)
    session.add(user)
    session.flush()
    return user


def issue_token(
    session: Session, user: User, label: str = "", expires_at: dt.datetime | None = None
) -> str:
    """Create a token for ``user`` and return it; only its hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=hash_token(token),
            prefix=token[: len(TOKEN_PREFIX) + 4],
            label=label,
            expires_at=expires_at,
        )
    )
    session.flush()
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
    return Principal(user_id=user.id, name=user.name, role=user.role)


def get_user(session: Session, name: str) -> User | None:
    """The user with this name, if any."""
    return session.scalar(select(User).where(User.name == name))


def has_users(session: Session) -> bool:
    """Whether any account exists (``init`` creates the first admin only once)."""
    return session.scalar(select(User.id).limit(1)) is not None
