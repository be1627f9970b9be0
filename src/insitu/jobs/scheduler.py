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
from insitu.jobs.backends.kubernetes import KubernetesExecutor
from insitu.jobs.backends.local import LocalExecutor
from insitu.jobs.backends.protocol import Executor
from insitu.jobs.backends.slurm import SlurmExecutor
from insitu.jobs.sockets import JobSockets
from insitu.releases import service as releases
from insitu.settings import Settings

log = logging.getLogger(__name__)


def executors(settings: Settings | None = None) -> dict[str, Executor]:
    """The backends this deployment runs: local always, Slurm where INSITU_SLURM_CONF is set,
    Kubernetes where INSITU_KUBERNETES_KUBECONFIG is (a flavor's ``backend`` picks one)."""
    backends: dict[str, Executor] = {"local": LocalExecutor()}
    if settings is not None and settings.slurm_conf:
        backends["slurm"] = SlurmExecutor(settings.slurm_conf)
    if settings is not None and settings.kubernetes_kubeconfig:
        backends["kubernetes"] = KubernetesExecutor(
            settings.kubernetes_kubeconfig,
            settings.kubernetes_namespace,
            settings.kubernetes_bundle_image,
            settings.kubernetes_queue,
        )
    return backends


def tick(
    platform: Platform,
    backends: dict[str, Executor] | None = None,
    sockets: JobSockets | None = None,
) -> tuple[int, int]:
    """One round over every backend: (jobs started, jobs that ended). With ``sockets``,
    each job gets its API socket at /run/insitu.sock."""
    backends = backends or executors(platform.settings)
    started: list[int] = []
    ended: list[int] = []
    for name, executor in backends.items():
        with session_scope(platform.sessions) as session:
            ended += jobs.follow(session, executor)
        with session_scope(platform.sessions) as session:
            names = access.user_names(session, jobs.queued_user_ids(session))
            # Slurm queues itself; only the local host's slots are counted here.
            free = (
                platform.settings.local_job_slots - jobs.running_count(session, name)
                if name == "local"
                else 1000
            )
            if free > 0:
                started += jobs.dispatch(
                    session, platform.settings, platform.store, executor, names, free, sockets
                )
    if sockets is not None:
        for job_id in ended:
            sockets.close(job_id)
    collect_results(platform, ended)
    return len(started), len(ended)


def collect_results(platform: Platform, job_ids: list[int]) -> list[int]:
    """Turn ended jobs' /results into release requests, one transaction each; returns the
    requests made. A job whose collection fails keeps its /results for the next try."""
    made = []
    settings = platform.settings
    for job_id in job_ids:
        try:
            with session_scope(platform.sessions) as session:
                context = releases.prepare(session, settings, platform.store, job_id)
            if context is None:
                continue
            gathered = releases.check_results(settings, job_id, context)
            with session_scope(platform.sessions) as session:
                request = releases.record_request(session, settings, job_id, gathered)
                request_id = request.id if request is not None else None
        except Exception:  # one job's results must not stop the others: log it, go on
            log.exception("collecting the results of job %s failed", job_id)
            continue
        if request_id is not None:
            releases.discard_results(settings, job_id)
            made.append(request_id)
    return made


def collect_pending(platform: Platform) -> list[int]:
    """After a restart: results of ended jobs that did not become requests yet."""
    with session_scope(platform.sessions) as session:
        ended = jobs.ended_job_ids(session)
    waiting = [i for i in ended if releases.has_results(platform.settings, i)]
    return collect_results(platform, waiting)


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
        backends = executors(self.platform.settings)
        sockets = JobSockets(self.platform)
        try:
            collect_pending(self.platform)
        except Exception:  # the sweep is a convenience; the loop must run
            log.exception("collecting pending results failed")
        while not self._stop.is_set():
            try:
                tick(self.platform, backends, sockets)
            except Exception:  # one bad job must not stop the scheduler: log it, go on
                log.exception("scheduler tick failed")
            self._stop.wait(self.interval_s)
        sockets.close_all()
