"""Job service: submit (after preflight), dispatch queued jobs fairly to a backend, follow them
to their end, cancel. Functions never commit; every state change is written with its ledger
event in the caller's transaction (the scheduler commits one job at a time)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.service import Principal
from insitu.datasets import service as datasets
from insitu.datasets.view import ensure_view, view_name
from insitu.db import utcnow
from insitu.jobs import preflight as checks
from insitu.jobs.backends.protocol import Executor, RunRequest, RunState, RunStatus
from insitu.jobs.logs import redact
from insitu.jobs.models import END_STATES, Flavor, Job, JobState
from insitu.jobs.sandbox import SandboxSpec, job_user_ids
from insitu.jobs.sockets import JobSockets
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.settings import Settings
from insitu.storage.protocol import BlobStore
from insitu.tools import service as tools
from insitu.tools.environment import build_settings
from insitu.tools.models import ToolVersion

JOB_SUBMITTED = events.register("job.submitted", "a job passed preflight and was queued")
JOB_STATE = events.register("job.state", "a job moved to preflight, scheduled or running")
JOB_STARTED = events.register("job.started", "a job started running in its sandbox")
JOB_ENDED = events.register("job.ended", "a job ended: its state, reason and run time")
JOB_LOGS_VIEWED = events.register("job.logs_viewed", "someone read a job's log")

DEFAULT_FLAVORS = (
    # name, CPUs, memory MB, GPUs, max run time s, scratch MB (CHAIMELEON's four).
    ("no-gpu", 2, 4096, 0, 4 * 3600, 2048),
    ("small-gpu", 4, 16384, 1, 24 * 3600, 10240),
    ("medium-gpu", 8, 32768, 2, 48 * 3600, 20480),
    ("large-gpu", 16, 65536, 4, 72 * 3600, 40960),
)
HINTS = {
    "exit_code": "the command exited with status {code}: read the end of the log "
    "(insitu job logs {id}); try it on a few subjects first with --sample",
    "out_of_memory": "the job used more memory than the {flavor} flavor allows "
    "({memory} MB): process fewer images at a time, or use a larger flavor",
    "time_limit": "the job ran past the {flavor} flavor's limit of {limit}: save "
    "checkpoints to /home and resume, or use a flavor with more time",
    "killed_by_user": "you cancelled it",
    "backend_lost": "the backend lost the job (a node restarted?): submit it again; "
    "nothing it wrote to /results was kept",
    "log_limit": "the job wrote more log than is kept (64 MB): log less, write data to /results",
    "sandbox_violation": "the sandbox could not be set up (the log's 'bwrap:' line says why): "
    "a dataset view or the tool environment may be missing on this node; tell the admins",
}


class JobError(ValueError):
    """A job request that cannot be fulfilled, with the reason."""


class NotYoursError(JobError):
    """Another user's job."""


def ensure_default_flavors(session: Session) -> None:
    """The four default flavors, unless flavors exist."""
    if session.scalar(select(func.count()).select_from(Flavor)):
        return
    for name, cpus, memory, gpus, runtime, scratch in DEFAULT_FLAVORS:
        session.add(
            Flavor(
                name=name,
                cpus=cpus,
                memory_mb=memory,
                gpus=gpus,
                max_runtime_s=runtime,
                scratch_mb=scratch,
                backend="local",
            )
        )
    ledger.record(
        session,
        FLAVORS_SET,
        actor=ledger.HOST_ACTOR,
        subject="flavors",
        payload={"flavors": [f[0] for f in DEFAULT_FLAVORS]},
    )


FLAVORS_SET = events.register("job.flavors_set", "the admin's resource flavors changed")
BACKENDS = ("local", "slurm", "kubernetes")


@dataclass(frozen=True)
class FlavorSpec:
    """What an admin sets for a flavor."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    max_runtime_s: int
    scratch_mb: int
    backend: str = "local"
    mig_profile: str | None = None


def set_flavor(session: Session, spec: FlavorSpec, actor_id: int) -> Flavor:
    """Create or change a flavor (admins); jobs already queued keep the flavor's name."""
    ensure_default_flavors(session)
    if spec.backend not in BACKENDS:
        raise JobError(f"backend {spec.backend!r} is unknown: use {', '.join(BACKENDS)}")
    if min(spec.cpus, spec.memory_mb, spec.max_runtime_s, spec.scratch_mb) < 1 or spec.gpus < 0:
        raise JobError("CPUs, memory, run time and scratch must be positive; GPUs 0 or more")
    flavor = session.scalars(select(Flavor).where(Flavor.name == spec.name)).first()
    if flavor is None:
        flavor = Flavor(name=spec.name)
        session.add(flavor)
    for key in ("cpus", "memory_mb", "gpus", "max_runtime_s", "scratch_mb", "backend",
                "mig_profile"):  # fmt: skip
        setattr(flavor, key, getattr(spec, key))
    ledger.record(
        session,
        FLAVORS_SET,
        actor=ledger.user_actor(actor_id),
        subject=f"flavor:{spec.name}",
        payload={k: v for k, v in vars(spec).items() if v is not None},
    )
    return flavor


def _public_command(command: Sequence[str]) -> list[str]:
    """The command as the public ledger records it: UIDs, pseudonyms and long encoded runs
    redacted, as in logs (the job row keeps it whole for its owner and auditors)."""
    return [redact(argument.encode()) for argument in command]


def public_text(text: str) -> str:
    """Text as the public ledger may record it: UIDs, pseudonyms and long encoded runs
    redacted, as in logs."""
    return redact(text.encode())


def job_by_id(session: Session, job_id: int) -> Job | None:
    """A job, for the domains that act on its end (releases)."""
    return session.get(Job, job_id)


def jobs_on_dataset(session: Session, dataset_id: int, limit: int = 200) -> list[Job]:
    """The newest jobs that used a dataset version (among the last 10,000 jobs)."""
    recent = session.scalars(select(Job).order_by(Job.id.desc()).limit(10_000))
    return [j for j in recent if dataset_id in j.dataset_ids][:limit]


def ended_job_ids(session: Session) -> list[int]:
    """Jobs that ran and ended (a lost job kept nothing)."""
    ended = [s for s in END_STATES if s != JobState.lost]
    return list(session.scalars(select(Job.id).where(Job.state.in_(ended)).order_by(Job.id)))


def _subject(job: Job) -> str:
    return f"job:{job.id}"


def _move(session: Session, job: Job, state: JobState, actor: str, event: events.EventType,
          payload: dict[str, object] | None = None) -> None:  # fmt: skip
    job.state = state
    job.state_times = {**job.state_times, state.value: utcnow().isoformat()}
    ledger.record(
        session,
        event,
        actor=actor,
        subject=_subject(job),
        payload={"state": state.value, **(payload or {})},
    )


@dataclass
class Submission:
    """What submitting did: the preflight, and the job when it was queued."""

    preflight: checks.Preflight
    job: Job | None


def submit(
    session: Session,
    settings: Settings,
    principal: Principal,
    *,
    tool_ref: str,
    dataset_names: Sequence[str],
    flavor: str,
    command: Sequence[str] | None,
    sample: int | None = None,
    dry_run: bool = False,
    can_run_images: bool = False,
    project: str | None = None,
) -> Submission:
    """Preflight, then (unless a dry run or a problem) queue the job."""
    ensure_default_flavors(session)
    result = checks.run_preflight(
        session,
        user_id=principal.user_id,
        user_name=principal.name,
        tool_ref=tool_ref,
        dataset_names=dataset_names,
        flavor_name=flavor,
        command=command,
        sample=sample,
        quota=checks.Quota(
            settings.job_max_concurrent,
            settings.job_gpu_hours_per_week,
            settings.project_max_concurrent,
            settings.project_gpu_hours_per_week,
        ),
        can_run_images=can_run_images,
        project=project,
    )
    if dry_run or not result.ok:
        return Submission(result, None)
    assert result.tool_version is not None  # noqa: S101 - preflight found it
    assert result.flavor is not None  # noqa: S101
    version = result.tool_version
    job = Job(
        user_id=principal.user_id,
        tool_version_id=version.id,
        dataset_ids=[d.id for d in result.datasets],
        flavor=result.flavor.name,
        command=list(command) if command else list(version.command),
        sample=sample,
        project_id=result.project_id,
        state=JobState.queued,
        state_times={JobState.queued.value: utcnow().isoformat()},
        backend=result.flavor.backend,
    )
    session.add(job)
    session.flush()
    tool = tools.tool_of(session, version)
    ledger.record(
        session,
        JOB_SUBMITTED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(job),
        payload={
            "state": "queued",
            "tool": tools.label(tool, version),
            "datasets": [f"{d.name} v{d.version}" for d in result.datasets],
            "flavor": job.flavor,
            "command": _public_command(job.command),
        },
    )
    return Submission(result, job)


def get_job(session: Session, principal: Principal, job_id: int) -> Job:
    """A job of the caller's (admins and auditors may read any)."""
    job = session.get(Job, job_id)
    if job is None or (
        job.user_id != principal.user_id and principal.role.value not in ("admin", "auditor")
    ):
        raise NotYoursError(f"no job {job_id} of yours")
    return job


def list_jobs(
    session: Session, principal: Principal, limit: int = 50, offset: int = 0
) -> list[Job]:
    """The caller's jobs, newest first."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.user_id == principal.user_id)
            .order_by(Job.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )


def dataset_names_of(session: Session, job_id: int) -> set[str]:
    """The names of a job's datasets."""
    job = session.get(Job, job_id)
    if job is None:
        return set()
    return {datasets.get_dataset_by_id(session, i).name for i in job.dataset_ids}


def running_count(session: Session, backend: str | None = None) -> int:
    """Jobs between preflight and their end (on one backend, if named)."""
    live = [JobState.preflight, JobState.scheduled, JobState.running]
    statement = select(func.count()).where(Job.state.in_(live))
    if backend is not None:
        statement = statement.where(Job.backend == backend)
    return int(session.scalar(statement) or 0)


def expected_wait_s(session: Session, settings: Settings, position: int) -> float | None:
    """A rough wait for the job at ``position`` in the queue: the median run time of the last
    100 ended jobs, times the jobs before it, over the local slots (None with no history)."""
    recent = session.scalars(
        select(Job.details).where(Job.state.in_(list(END_STATES))).order_by(Job.id.desc())
        .limit(100)
    ).all()  # fmt: skip
    times = sorted(float(d["run_seconds"]) for d in recent if d.get("run_seconds") is not None)
    if not times:
        return None
    median = times[len(times) // 2]
    return round(median * (position + 1) / max(1, settings.local_job_slots), 1)


def queued_user_ids(session: Session) -> set[int]:
    """Users with queued jobs."""
    return set(session.scalars(select(Job.user_id).where(Job.state == JobState.queued)))


def queue_position(session: Session, job: Job) -> int | None:
    """How many queued jobs go before this one (fair order), or None once it left the queue."""
    if job.state != JobState.queued:
        return None
    order = [j.id for j in _fair_queue(session)]
    return order.index(job.id) if job.id in order else None


def _fair_queue(session: Session) -> list[Job]:
    """Queued jobs, round-robin between users: each user's oldest first, users with fewer
    live jobs first."""
    queued = list(session.scalars(select(Job).where(Job.state == JobState.queued).order_by(Job.id)))
    running: dict[int, int] = dict(
        session.execute(
            select(Job.user_id, func.count())
            .where(Job.state.in_([JobState.preflight, JobState.scheduled, JobState.running]))
            .group_by(Job.user_id)
        ).all()
    )
    per_user: dict[int, list[Job]] = {}
    for job in queued:
        per_user.setdefault(job.user_id, []).append(job)
    users = sorted(per_user, key=lambda u: (running.get(u, 0), per_user[u][0].id))
    order: list[Job] = []
    while users:  # one job of each user in turn
        for user_id in list(users):
            order.append(per_user[user_id].pop(0))
            if not per_user[user_id]:
                users.remove(user_id)
    return order


# -- running -------------------------------------------------------------------------------------


def _request(
    session: Session,
    settings: Settings,
    store: BlobStore,
    job: Job,
    user_name: str,
    sockets: JobSockets | None = None,
) -> RunRequest:
    version = session.get(ToolVersion, job.tool_version_id)
    flavor = session.scalars(select(Flavor).where(Flavor.name == job.flavor)).one()
    assert version is not None  # noqa: S101 - a foreign key
    tool_path = None
    if version.runtime == "bundle":
        tool_path = tools.environment_of(session, store, build_settings(settings), version).path
    views = {}
    for dataset_id in job.dataset_ids:
        dataset = datasets.get_dataset_by_id(session, dataset_id)
        views[view_name(dataset)] = ensure_view(  # a sample is mounted at the same place
            session, store, settings.resolved_views_root, dataset, sample=job.sample
        )
    folder = settings.resolved_jobs_root / str(job.id)
    home = settings.resolved_homes_root / user_name
    results = folder / "results"
    for path in (home, results):
        path.mkdir(parents=True, exist_ok=True)
    ids = job_user_ids(settings.job_user)
    if ids is not None:  # the sandbox starts as the job user: it must own what it writes
        for path in (home, results):
            os.chown(path, *ids)
    socket_path = None
    env: dict[str, str] = {}
    if sockets is not None:
        expires = utcnow() + dt.timedelta(seconds=flavor.max_runtime_s + 300)
        env["INSITU_TOKEN"] = access.issue_job_token(session, job.user_id, job.id, expires)
        env["INSITU_URL"] = "unix:/run/insitu.sock"
        socket_path = sockets.open(job.id, job.user_id, folder)
    spec = SandboxSpec(
        job_id=job.id,
        user=user_name,
        env=env,
        socket=socket_path,
        command=list(job.command),
        tool=tool_path,
        views=views,
        home=home,
        results=results,
        cpus=flavor.cpus,
        memory_mb=flavor.memory_mb,
        scratch_mb=flavor.scratch_mb,
        gpus=list(range(flavor.gpus)),
    )
    return RunRequest(
        spec,
        folder,
        flavor.max_runtime_s,
        settings.job_user,
        flavor.name,
        version.image,
        flavor.mig_profile,
    )


def dispatch(
    session: Session,
    settings: Settings,
    store: BlobStore,
    executor: Executor,
    user_names: dict[int, str],
    limit: int = 1000,
    sockets: JobSockets | None = None,
) -> list[int]:
    """Start queued jobs in fair order (preflight again, prepare, start); returns their ids.
    A job whose use is no longer allowed (grant revoked, dataset invalidated) fails here."""
    started = []
    for job in [j for j in _fair_queue(session) if j.backend == executor.name][:limit]:
        host = ledger.HOST_ACTOR
        _move(session, job, JobState.preflight, host, JOB_STATE)
        version = session.get(ToolVersion, job.tool_version_id)
        targets = [datasets.get_dataset_by_id(session, i) for i in job.dataset_ids]
        reasons = [
            decision.reason
            for decision in (datasets.can_use_dataset(session, job.user_id, d) for d in targets)
            if not decision.allowed
        ]
        if version is not None:
            reasons += tools.check_runnable(session, version, targets, job.user_id).reasons
        if reasons:
            _end(session, job, JobState.failed, "preflight", None, None,
                 "; ".join(reasons))  # fmt: skip
            continue
        try:
            request = _request(session, settings, store, job, user_names[job.user_id], sockets)
        except (OSError, ValueError, RuntimeError) as exc:  # one job's setup, not the queue's
            _end(session, job, JobState.failed, "setup_failed", None, None,
                 f"the job could not be set up: {exc}")  # fmt: skip
            continue
        job.backend_ref = executor.prepare(request)
        _move(session, job, JobState.scheduled, host, JOB_STATE)
        executor.start(job.backend_ref)
        _move(session, job, JobState.running, host, JOB_STARTED, {"backend": executor.name})
        started.append(job.id)
    return started


def _end(
    session: Session,
    job: Job,
    state: JobState,
    reason: str,
    exit_code: int | None,
    run_seconds: float | None,
    hint: str = "",
) -> None:
    flavor = session.scalars(select(Flavor).where(Flavor.name == job.flavor)).first()
    job.exit_code = exit_code
    job.end_reason = reason
    access.revoke_job_tokens(session, job.id)
    job.details = {**job.details, "run_seconds": run_seconds}
    template = HINTS.get(reason, "") if state != JobState.succeeded else ""
    job.hint = hint or template.format(
        code=exit_code,
        id=job.id,
        flavor=job.flavor,
        memory=flavor.memory_mb if flavor else "?",
        limit=dt.timedelta(seconds=flavor.max_runtime_s) if flavor else "?",
    )
    version = session.get(ToolVersion, job.tool_version_id)
    tool_label = ""
    if version is not None:
        tool = tools.tool_of(session, version)
        tool_label = tools.label(tool, version)
        if run_seconds is not None:  # it ran: the tool was used
            tiers = sorted({datasets.get_dataset_by_id(session, i).tier.value
                            for i in job.dataset_ids})  # fmt: skip
            ledger.record(
                session,
                tools.TOOL_USED,
                actor=ledger.user_actor(job.user_id),
                subject=f"tool:{tool_label}",
                payload={"job": job.id, "state": state.value, "tiers": tiers},
            )
    _move(
        session,
        job,
        state,
        ledger.HOST_ACTOR,
        JOB_ENDED,
        {
            "reason": reason,
            "exit_code": exit_code,
            "run_ms": int(run_seconds * 1000) if run_seconds is not None else None,
            "tool": tool_label,
            "flavor": job.flavor,
            "command": _public_command(job.command),
            "datasets": job.dataset_ids,
        },
    )


def _state_of(status: RunStatus) -> tuple[JobState, str]:
    if status.state == RunState.lost:
        return JobState.lost, "backend_lost"
    reason = status.end_reason or "exit_code"
    if reason == "killed_by_user":
        return JobState.cancelled, reason
    if reason == "time_limit":
        return JobState.timed_out, reason
    if reason == "exit_code" and status.exit_code == 0:
        return JobState.succeeded, reason
    return JobState.failed, reason


def follow(session: Session, executor: Executor) -> list[int]:
    """Ask the backend about every running job and record those that ended; returns them."""
    ended = []
    running = select(Job).where(Job.state == JobState.running, Job.backend == executor.name)
    for job in session.scalars(running):
        status = executor.status(job.backend_ref)
        if status.state in (RunState.exited, RunState.lost):
            state, reason = _state_of(status)
            _end(session, job, state, reason, status.exit_code, status.run_seconds)
            executor.cleanup(job.backend_ref)
            ended.append(job.id)
    return ended


def cancel(session: Session, executor: Executor, principal: Principal, job_id: int) -> Job:
    """Stop a job of yours: a queued one ends at once, a running one through its backend."""
    job = get_job(session, principal, job_id)
    if job.user_id != principal.user_id and principal.role.value != "admin":
        raise NotYoursError(f"no job {job_id} of yours")
    if job.state in END_STATES:
        raise JobError(f"job {job_id} has ended ({job.state.value})")
    if job.state == JobState.queued or not job.backend_ref:
        _end(session, job, JobState.cancelled, "killed_by_user", None, None)
    else:
        executor.cancel(job.backend_ref)
    return job


def job_folder(settings: Settings, job: Job) -> Path:
    """Where a job's files are on the platform host."""
    return settings.resolved_jobs_root / str(job.id)


def read_logs(session: Session, executor: Executor, principal: Principal, job_id: int) -> str:
    """A job's log for its owner (narrowed, redacted) or an admin (whole); a ledger event."""
    job = get_job(session, principal, job_id)
    whole = principal.role.value == "admin"
    data = executor.logs(job.backend_ref) if job.backend_ref else b""
    ledger.record(
        session,
        JOB_LOGS_VIEWED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(job),
        payload={"bytes": len(data), "whole": whole},
    )
    return redact(data, whole=whole)
