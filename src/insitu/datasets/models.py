"""Datasets: versions of a fixed set of catalogued series, their stewards, grants and terms.

A dataset references catalogue series; it never copies image bytes. Its state machine:
draft (editable) → released (content frozen, content hash kept) → published (metadata public)
→ invalidated (unusable, with a reason). Every change is audited (``__ledger_audit__``).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base, UTCDateTime, utcnow


class DatasetState(enum.StrEnum):
    """Where a dataset version is in its lifecycle."""

    draft = "draft"
    released = "released"
    published = "published"
    invalidated = "invalidated"


class Tier(enum.StrEnum):
    """Whether a dataset holds real (de-identified) patients or synthetic data."""

    real = "real"
    synthetic = "synthetic"


class ReviewPolicy(enum.StrEnum):
    """Who must look at a job's results before they leave (releases domain). The strictest
    policy of a job's datasets applies."""

    automatic = "automatic"
    """Released when every check passes: synthetic-tier datasets only."""
    one_reviewer = "one_reviewer"
    two_reviewers = "two_reviewers"


POLICY_STRICTNESS = {
    ReviewPolicy.automatic: 0,
    ReviewPolicy.one_reviewer: 1,
    ReviewPolicy.two_reviewers: 2,
}


class Dataset(Base):
    """One version of a dataset."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), nullable=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[str]] = mapped_column(JSON, default=list)
    license: Mapped[str] = mapped_column(String(64), default="")
    purpose: Mapped[str] = mapped_column(Text, default="")
    terms: Mapped[str] = mapped_column(Text, default="")
    tier: Mapped[Tier] = mapped_column(Enum(Tier, native_enum=False, length=16))
    state: Mapped[DatasetState] = mapped_column(
        Enum(DatasetState, native_enum=False, length=16), default=DatasetState.draft
    )
    corrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """How the series were chosen: the catalogue query, or "explicit list"."""
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    invalidated_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Set once: a version that was ever published keeps its public landing page."""
    pid: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    """Persistent identifier, reserved at release and registered at publication."""
    pid_registered: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    review_policy: Mapped[ReviewPolicy] = mapped_column(
        Enum(ReviewPolicy, native_enum=False, length=16),
        default=ReviewPolicy.one_reviewer,
        server_default=ReviewPolicy.one_reviewer.value,
    )
    """How job results on this version are reviewed before they leave (set by a steward)."""


class DatasetSeries(Base):
    """A catalogue series in a dataset version."""

    __tablename__ = "dataset_series"
    __table_args__ = (UniqueConstraint("dataset_id", "series_id"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)


class DatasetSteward(Base):
    """A user who looks after a dataset: its creator and whoever they add."""

    __tablename__ = "dataset_stewards"
    __table_args__ = (UniqueConstraint("dataset_id", "user_id"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)


class DatasetGrant(Base):
    """The use of a dataset, granted to a user or a project, optionally until a date."""

    __tablename__ = "dataset_grants"
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id"), nullable=True, index=True
    )
    until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TermsAcceptance(Base):
    """A user accepted a dataset's terms of use (once, before first use)."""

    __tablename__ = "dataset_terms_accepted"
    __table_args__ = (UniqueConstraint("dataset_id", "user_id"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    accepted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RequestState(enum.StrEnum):
    """Where an access request stands."""

    pending = "pending"
    approved = "approved"
    refused = "refused"


class AccessRequest(Base):
    """A user asks to use a dataset, stating a purpose; a steward approves or refuses."""

    __tablename__ = "dataset_requests"
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    purpose: Mapped[str] = mapped_column(Text)
    state: Mapped[RequestState] = mapped_column(
        Enum(RequestState, native_enum=False, length=16), default=RequestState.pending
    )
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DatasetStatistics(Base):
    """The counts and breakdowns of a frozen (released or later) version, computed once on
    first view: its content never changes, and computing them reads every instance row. A
    cache, so not audited."""

    __tablename__ = "dataset_statistics"

    dataset_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
