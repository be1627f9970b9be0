"""Ingest batches, their per-file errors and the quarantine."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base, UTCDateTime, utcnow


class BatchStatus(enum.StrEnum):
    """Where a batch is. ``running`` after a crash means: re-run the same command."""

    running = "running"
    completed = "completed"


class IngestBatch(Base):
    """One ingest run: its options, counts and de-identification QA report."""

    __tablename__ = "ingest_batches"
    # Creation and status changes are on the ledger; the running counters are not (they are
    # summed up in the batch-finished event).
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"status"})

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(64))
    deid_options: Mapped[str] = mapped_column(String(255))
    status: Mapped[BatchStatus] = mapped_column(Enum(BatchStatus, native_enum=False, length=16))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ingested: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    clinical_rows: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IngestError(Base):
    """A file or clinical row that could not be ingested. The path is kept only as an HMAC."""

    __tablename__ = "ingest_errors"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingest_batches.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    path_hmac: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuarantinedInstance(Base):
    """A de-identified instance whose pixels may show identity; held for a steward."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    subject_pseudonym: Mapped[str] = mapped_column(String(32), index=True)
    site: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    blob_digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    reason_code: Mapped[str] = mapped_column(String(32), index=True, default="burned-in-absent")
    """The kind of reason (``processor.QUARANTINE_CODES``): stewards decide in bulk by it."""
    deid_options: Mapped[str] = mapped_column(String(255))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_batches.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
