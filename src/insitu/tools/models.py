"""Tools and their immutable versions, pinned by digest, with a review lifecycle:
draft → in_review → verified → deprecated (a rejected review goes back to draft).
Every change is audited (``__ledger_audit__``)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base, UTCDateTime, utcnow


class ToolState(enum.StrEnum):
    """Where a tool version is in its review."""

    draft = "draft"
    in_review = "in_review"
    verified = "verified"
    deprecated = "deprecated"


class Tool(Base):
    """A tool name, owned by the maintainer who first published it."""

    __tablename__ = "tools"
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    maintainer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ToolVersion(Base):
    """One immutable version of a tool."""

    __tablename__ = "tool_versions"
    __table_args__ = (UniqueConstraint("tool_id", "version"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    tool_id: Mapped[int] = mapped_column(ForeignKey("tools.id"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    """SHA-256 of the bundle archive, or of the OCI image (its ``@sha256:`` digest)."""
    summary: Mapped[str] = mapped_column(String(300))
    readme: Mapped[str] = mapped_column(Text, default="")
    license: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    command: Mapped[list[str]] = mapped_column(JSON)
    min_flavor: Mapped[str] = mapped_column(String(32))
    gpu: Mapped[bool] = mapped_column(Boolean, default=False)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    runtime: Mapped[str] = mapped_column(String(16))
    image: Mapped[str | None] = mapped_column(String(300), nullable=True)
    requirements: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[ToolState] = mapped_column(
        Enum(ToolState, native_enum=False, length=16), default=ToolState.draft
    )
    review_note: Mapped[str] = mapped_column(Text, default="")
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deprecated_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    successor: Mapped[str | None] = mapped_column(String(140), nullable=True)
    """``name@version`` that replaces a deprecated version."""
    published_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
