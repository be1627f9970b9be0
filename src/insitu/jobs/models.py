"""Jobs, flavors and their states. A job's state changes are audited: each transition is
written to the ledger in the transaction that makes it.

queued → preflight → scheduled → running → succeeded | failed | cancelled | timed_out | lost
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import JSON, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base, UTCDateTime, utcnow


class JobState(enum.StrEnum):
    """Where a job is."""

    queued = "queued"
    preflight = "preflight"
    scheduled = "scheduled"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    lost = "lost"


END_STATES = frozenset(
    {JobState.succeeded, JobState.failed, JobState.cancelled, JobState.timed_out, JobState.lost}
)


class Flavor(Base):
    """A resource flavor the admin offers: CPUs, memory, whole GPUs, run time, backend."""

    __tablename__ = "job_flavors"
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"*"})

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    max_runtime_s: Mapped[int] = mapped_column(Integer)
    scratch_mb: Mapped[int] = mapped_column(Integer, default=1024)
    backend: Mapped[str] = mapped_column(String(16), default="local")
    mig_profile: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """A MIG profile where the host offers them (untested here)."""


class Job(Base):
    """One batch job: a tool version run on datasets, with a flavor and a command."""

    __tablename__ = "jobs"
    __ledger_audit__: ClassVar[frozenset[str]] = frozenset({"state"})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    tool_version_id: Mapped[int] = mapped_column(ForeignKey("tool_versions.id"), index=True)
    dataset_ids: Mapped[list[int]] = mapped_column(JSON)
    flavor: Mapped[str] = mapped_column(String(32))
    command: Mapped[list[str]] = mapped_column(JSON)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id"), nullable=True, index=True
    )
    """The project the job counts against (its quota), if one was named."""
    sample: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Run on the first N subjects of each dataset only (a smoke run)."""
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, native_enum=False, length=16), default=JobState.queued, index=True
    )
    state_times: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """ISO time of each state reached."""
    backend: Mapped[str] = mapped_column(String(16), default="local")
    backend_ref: Mapped[str] = mapped_column(String(128), default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    end_reason: Mapped[str] = mapped_column(String(32), default="")
    """exit_code, out_of_memory, time_limit, killed_by_user, backend_lost, sandbox_violation."""
    hint: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
