"""Release requests: the files a job left in /results, their check verdicts, the reviewers'
votes. Every change is audited (``__ledger_audit__``).

checking → refused (a check refused a file) | in_review → approved | rejected
checking → approved (automatic policy, every check passed, nothing flagged)
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base, UTCDateTime, utcnow


class ReleaseState(enum.StrEnum):
    """Where a release request is."""

    checking = "checking"
    refused = "refused"
    in_review = "in_review"
    approved = "approved"
    rejected = "rejected"


class Verdict(enum.StrEnum):
    """What a check (and so a file) got: pass, flag for review, or refuse."""

    passed = "pass"
    flagged = "flag"
    refused = "refuse"


class ReleaseRequest(Base):
    """The results of one job, asking to leave."""

    __tablename__ = "release_requests"
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id"), nullable=True, unique=True, index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    dataset_ids: Mapped[list[int]] = mapped_column(JSON)
    policy: Mapped[str] = mapped_column(String(16))
    """The strictest review policy of the datasets: automatic, one_reviewer, two_reviewers."""
    approvals_needed: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[ReleaseState] = mapped_column(
        Enum(ReleaseState, native_enum=False, length=16), default=ReleaseState.checking, index=True
    )
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    """Why it was refused or rejected: what the requester should change."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReleaseFile(Base):
    """One file of a request with what the checks said about it."""

    __tablename__ = "release_files"
    __table_args__ = (UniqueConstraint("request_id", "path"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("release_requests.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    """Relative to /results, as the job wrote it (names that could not be stored are escaped)."""
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    media_type: Mapped[str] = mapped_column(String(64), default="")
    """Detected from the content, whatever the name says."""
    verdict: Mapped[Verdict] = mapped_column(Enum(Verdict, native_enum=False, length=8))
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """Each check's verdict and reason: ``{"check", "verdict", "reason"}``."""
    stored: Mapped[bool] = mapped_column(default=False)
    """Whether a copy was kept (refused links, devices and oversize files are not copied)."""


class VoteDecision(enum.StrEnum):
    """A reviewer's vote."""

    approve = "approve"
    reject = "reject"


class ReleaseVote(Base):
    """One reviewer's vote on a request, with a comment."""

    __tablename__ = "release_votes"
    __table_args__ = (UniqueConstraint("request_id", "reviewer_id"),)
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("release_requests.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    decision: Mapped[VoteDecision] = mapped_column(Enum(VoteDecision, native_enum=False, length=8))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PixelFingerprint(Base):
    """What the checks know about one stored instance's pixels: a hash of each decoded frame,
    the frame size and the value range. Derived from the blob (content addressed), so it never
    changes; computed the first time a job's results on it are checked."""

    __tablename__ = "pixel_fingerprints"

    blob_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    columns: Mapped[int] = mapped_column(Integer, default=0)
    frame_sha256: Mapped[list[str]] = mapped_column(JSON, default=list)
    stored_min: Mapped[float] = mapped_column(default=0.0)
    stored_max: Mapped[float] = mapped_column(default=0.0)
    modality_min: Mapped[float] = mapped_column(default=0.0)
    modality_max: Mapped[float] = mapped_column(default=0.0)
