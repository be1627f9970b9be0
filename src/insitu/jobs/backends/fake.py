"""A fake backend for state-machine tests and the dispatch benchmark: it runs nothing, and
reports what its script says. It keeps the executor contract (idempotent calls) exactly."""

from __future__ import annotations

from dataclasses import dataclass, field

from insitu.jobs.backends.protocol import RunRequest, RunState, RunStatus


@dataclass
class FakeExecutor:
    """Jobs 'run' until ``finish`` is called for them (or a scripted outcome applies)."""

    name: str = "fake"
    can_run_images: bool = True
    outcome: RunStatus | None = None
    """When set, every started job ends at once with this status."""
    started: dict[str, int] = field(default_factory=dict)
    """reference → how many times start was called (idempotence shows as 1 effective start)."""
    ended: dict[str, RunStatus] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    cleaned: set[str] = field(default_factory=set)
    requests: dict[str, RunRequest] = field(default_factory=dict)

    def prepare(self, request: RunRequest) -> str:
        """The reference is the job id; preparing twice changes nothing."""
        reference = f"fake-{request.spec.job_id}"
        self.requests.setdefault(reference, request)
        return reference

    def start(self, reference: str) -> None:
        """Count the start; a scripted outcome ends it at once."""
        self.started[reference] = self.started.get(reference, 0) + 1
        if self.outcome is not None:
            self.ended.setdefault(reference, self.outcome)

    def finish(self, reference: str, status: RunStatus) -> None:
        """Test hook: the job ended."""
        self.ended[reference] = status

    def status(self, reference: str) -> RunStatus:
        """Scripted."""
        if reference in self.ended:
            return self.ended[reference]
        if reference in self.started:
            return RunStatus(RunState.running)
        return RunStatus(RunState.pending)

    def cancel(self, reference: str) -> None:
        """Ends it as killed by the user (once)."""
        self.cancelled.add(reference)
        self.ended.setdefault(
            reference, RunStatus(RunState.exited, exit_code=-9, end_reason="killed_by_user")
        )

    def logs(self, reference: str) -> bytes:
        """Nothing was run."""
        return b"fake backend: nothing ran\n"

    def cleanup(self, reference: str) -> None:
        """Remember it."""
        self.cleaned.add(reference)
