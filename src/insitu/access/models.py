"""Users, roles, personal API tokens and projects."""

from __future__ import annotations

import datetime as dt
import enum
from typing import ClassVar

from sqlalchemy import Boolean, Enum, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from insitu.db import Base, UTCDateTime, utcnow


class Role(enum.StrEnum):
    """The platform roles of DESIGN.md."""

    admin = "admin"
    steward = "steward"
    researcher = "researcher"
    maintainer = "maintainer"
    organiser = "organiser"
    auditor = "auditor"


class User(Base):
    """A person (or service) who can log in."""

    __tablename__ = "users"
    # Every change to an account commits with its ledger entry (insitu.ledger.guard).
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    idp_subject: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    """The OpenID provider's ``iss`` + ``sub`` for accounts that sign in with OIDC."""
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """argon2id hash; None for accounts that log in only with tokens or OIDC."""
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    """A personal API token. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"
    # Issue, expiry, revocation and each day's first login are on the ledger.
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset(
        {"user_id", "token_hash", "expires_at", "revoked_at", "last_login_on"}
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_login_on: Mapped[str | None] = mapped_column(String(10), nullable=True)
    """UTC day (ISO) of the token's last login event: one ``access.login`` per token a day."""

    user: Mapped[User] = relationship(back_populates="tokens")


class ProjectRole(enum.StrEnum):
    """A member's place in a project: leads manage the membership."""

    lead = "lead"
    member = "member"


class Project(Base):
    """A named group of users: a consortium, a lab, a challenge team."""

    __tablename__ = "projects"
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    idp_group: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    """An identity-provider group whose members join this project at login (OIDC)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProjectMember(Base):
    """One user in one project."""

    __tablename__ = "project_members"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[ProjectRole] = mapped_column(Enum(ProjectRole, native_enum=False, length=16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
