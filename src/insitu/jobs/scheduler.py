"""The scheduler: a loop that dispatches queued jobs and follows running ones, one short
transaction per tick. Restarting it loses nothing: job state lives in the database and each
runner's files, and every backend call is idempotent."""

from __future__ import annotations

import logging
import threading

from insitu.access import service as access
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.jobs import service as jobs
from insitu.jobs.backends.local import LocalExecutor
from insitu.jobs.backends.protocol import Executor

log = logging.getLogger(__name__)


def executors() -> dict[str, Executor]:
    """The backends this deployment runs (Slurm and Kubernetes join with their issue parts)."""
    return {"local": LocalExecutor()}


def tick(platform: Platform, backends: dict[str, Executor] | None = None) -> tuple[int, int]:
    """One round: (jobs started, jobs that ended)."""
    backends = backends or executors()
    executor = backends["local"]
    with session_scope(platform.sessions) as session:
        ended = jobs.follow(session, executor)
    with session_scope(platform.sessions) as session:
        queued_users = jobs.queued_user_ids(session)
        names = access.user_names(session, queued_users)
        free = platform.settings.local_job_slots - jobs.running_count(session)
        started = (
            jobs.dispatch(session, platform.settings, platform.store, executor, names, free)
            if free > 0
            else []
        )
    return len(started), len(ended)


class Scheduler:
    """The loop, in a daemon thread of the serving process."""

    def __init__(self, platform: Platform, interval_s: float = 0.2) -> None:
        self.platform = platform
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="insitu-scheduler", daemon=True)

    def start(self) -> None:
        """Start the loop."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current tick."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        backends = executors()
        while not self._stop.is_set():
            try:
                tick(self.platform, backends)
            except Exception:  # one bad job must not stop the scheduler: log it, go on
                log.exception("scheduler tick failed")
            self._stop.wait(self.interval_s)
