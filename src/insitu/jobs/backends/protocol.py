"""The one executor contract every job backend implements (local, slurm, kubernetes, and the
fake the state-machine tests use). Every call is idempotent: a restarted scheduler calls them
again for jobs it finds mid-way, and re-attaches instead of losing them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from insitu.jobs.sandbox import SandboxSpec


class RunState(enum.StrEnum):
    """What a backend says of a job it was given."""

    pending = "pending"
    running = "running"
    exited = "exited"
    lost = "lost"


@dataclass(frozen=True)
class RunStatus:
    """A backend's view of one job."""

    state: RunState
    exit_code: int | None = None
    end_reason: str = ""
    run_seconds: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class RunRequest:
    """A job as a backend receives it: the sandbox and the limits around it."""

    spec: SandboxSpec
    folder: Path
    """The job's folder on the platform host (log, state files)."""
    max_runtime_s: int
    job_user: str
    flavor: str = ""
    image: str | None = None
    mig_profile: str | None = None
    """A MIG profile (e.g. 1g.10gb) instead of whole GPUs, where the host offers them."""
    """The tool's OCI image (pinned by digest), for backends that run images."""


@runtime_checkable
class Executor(Protocol):
    """What every backend implements."""

    name: str
    can_run_images: bool

    def prepare(self, request: RunRequest) -> str:
        """Make the job ready to start; returns the backend's reference for it."""
        ...

    def start(self, reference: str) -> None:
        """Start it (again: a no-op)."""
        ...

    def status(self, reference: str) -> RunStatus:
        """Where it is."""
        ...

    def cancel(self, reference: str) -> None:
        """Stop it (a no-op once it ended)."""
        ...

    def logs(self, reference: str) -> bytes:
        """Everything it wrote so far (kept after it ends)."""
        ...

    def cleanup(self, reference: str) -> None:
        """Release what the backend holds for it; logs and state files stay."""
        ...
