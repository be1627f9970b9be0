"""Release service: a job's /results become a request, the automatic checks judge each file,
reviewers vote under the datasets' strictest policy, and the requester downloads what was
approved. Functions never commit; each change is written with its ledger event in the
caller's transaction.

Nothing else in insitu hands out job output: jobs keep /results on the host until they end,
and :func:`prepare`, :func:`check_results` and :func:`record_request` (run by the scheduler's
``collect_results``, one transaction each side of the checks) move them into the request's
store here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from insitu.access.service import Principal
from insitu.catalog import service as catalog
from insitu.datasets import service as datasets
from insitu.datasets.models import POLICY_STRICTNESS, Dataset, ReviewPolicy, Tier
from insitu.db import utcnow
from insitu.jobs import service as jobs
from insitu.jobs.models import Job
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.releases.checker import CheckerFailedError, FileToCheck, run_checker
from insitu.releases.checks import MB, CheckContext, Finding, iter_names, worst
from insitu.releases.fingerprints import ensure_fingerprints, fingerprints_of
from insitu.releases.models import (
    ReleaseFile,
    ReleaseRequest,
    ReleaseState,
    ReleaseVote,
    Verdict,
    VoteDecision,
)
from insitu.settings import Settings
from insitu.storage.protocol import BlobStore
from insitu.tools import service as tools

RELEASE_REQUESTED = events.register("release.requested", "a job's results asked to leave")
RELEASE_CHECKED = events.register("release.checked", "the automatic checks judged a result file")
RELEASE_STATE = events.register(
    "release.state", "a release request was refused, sent to review, approved or rejected"
)
RELEASE_VOTED = events.register("release.voted", "a reviewer approved or rejected a release")
RELEASE_PREVIEWED = events.register("release.previewed", "a reviewer opened a result file")
RELEASE_DOWNLOADED = events.register("release.downloaded", "the requester downloaded a file")
APPROVALS = {ReviewPolicy.automatic: 0, ReviewPolicy.one_reviewer: 1, ReviewPolicy.two_reviewers: 2}
PREVIEW_TYPES = frozenset(
    {"text/plain", "text/csv", "application/json", "image/png", "image/jpeg", "image/gif"}
)
PREVIEW_LIMIT = MB
MAX_PATH = 1000


class ReleaseError(ValueError):
    """A release action that cannot be done, with the reason."""


class NotAllowedError(ReleaseError):
    """The caller may not do this to this request."""


class ReleaseStateError(ReleaseError):
    """The request is not in a state that allows it."""


@dataclass
class Gathered:
    """A result file as found in /results, before the content checks."""

    name: str
    size: int = 0
    sha256: str = ""
    media_type: str = ""
    stored: Path | None = None
    findings: list[Finding] = field(default_factory=list)


def _subject(request: ReleaseRequest) -> str:
    return f"release:{request.id}"


def _display(relative: str, number: int) -> tuple[str, str]:
    """The name as stored (undecodable bytes escaped, cut if too long) and why it is
    refused, if it is."""
    raw = os.fsencode(relative)
    shown = raw.decode("utf-8", "backslashreplace")
    if len(shown) > MAX_PATH:
        return f"{shown[: MAX_PATH - 20]}... (#{number})", (
            f"its path is over {MAX_PATH:,} characters long: use shorter names"
        )
    if shown != relative or any(ord(c) < 32 or c == "\x7f" for c in shown):
        return shown, "its name holds bytes that are not UTF-8 text or control characters"
    if "\\" in shown or any(part in ("..", ".") for part in shown.split("/")):
        return shown, "its name could climb out of the folder it is saved in (path traversal)"
    return shown, ""


def _copy(source: Path, target: Path, limit: int) -> tuple[int, str, str]:
    """Copy a regular, singly-linked file without following links: (size, sha256, problem)."""
    descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
            return 0, "", "it changed into a link or special file while it was read"
        digest = hashlib.sha256()
        size = 0
        with target.open("xb") as out:
            while chunk := handle.read(MB):
                size += len(chunk)
                if size > limit:
                    return size, "", "it grew past the size limit while it was read"
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    target.chmod(0o400)
    return size, digest.hexdigest(), ""


def _refusal(check: str, reason: str) -> Finding:
    return Finding(check, Verdict.refused, reason)


def gather(
    results: Path, store: Path, max_file: int, max_request: int, max_files: int = 10_000
) -> list[Gathered]:
    """Walk /results without following links; copy what may be checked into ``store``
    (named by content), refuse links, special files and what is over the limits."""
    found: list[Gathered] = []
    total = 0
    seen = 0
    pending = [results]
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                seen += 1
                if seen > max_files:
                    return [*found, Gathered(f"(more than {max_files:,} files and folders)",
                                             findings=[_refusal("too-many-files",
                        f"the job left more than {max_files:,} files and folders in /results: "
                        "pack them into one zip or tar archive")])]  # fmt: skip
                relative = os.path.relpath(entry.path, results)
                name, bad_name = _display(relative, seen)
                item = Gathered(name)
                found.append(item)
                status = entry.stat(follow_symlinks=False)
                if bad_name:
                    item.findings.append(_refusal("name", bad_name))
                if stat.S_ISLNK(status.st_mode):
                    item.media_type = "inode/symlink"
                    target = Path(entry.path).readlink()
                    item.findings.append(_refusal(
                        "links", f"is a symbolic link (to {target}): links never leave, "
                        "whatever they point to; write the file itself to /results"))  # fmt: skip
                elif stat.S_ISDIR(status.st_mode):
                    if bad_name:  # not opened: the folder stands, refused, for what it holds
                        item.media_type = "inode/directory"
                    else:
                        found.pop()
                        pending.append(Path(entry.path))
                elif not stat.S_ISREG(status.st_mode):
                    item.media_type = "inode/special"
                    item.findings.append(_refusal("links", "is a pipe, socket or device file"))
                elif status.st_nlink != 1:
                    item.media_type = "inode/hardlink"
                    item.findings.append(_refusal(
                        "links", f"is a hard link ({status.st_nlink} names for one file): "
                        "links never leave; write a copy to /results"))  # fmt: skip
                elif status.st_size > max_file:
                    item.size = status.st_size
                    item.findings.append(_refusal(
                        "size", f"is {status.st_size:,} bytes, over the limit of {max_file:,} "
                        "bytes per file: release a smaller summary"))  # fmt: skip
                elif total + status.st_size > max_request:
                    item.size = status.st_size
                    item.findings.append(_refusal(
                        "request-size", f"the request's files pass {max_request:,} bytes "
                        "with this one: release less, or in several jobs"))  # fmt: skip
                elif not item.findings:
                    _store(entry.path, store / f".spool-{len(found)}", max_file, item)
                    total += item.size
    return found


def _store(source: str, spool: Path, max_file: int, item: Gathered) -> None:
    store = spool.parent
    size, digest, problem = _copy(Path(source), spool, max_file)
    item.size = size
    if problem:
        spool.unlink(missing_ok=True)
        item.findings.append(_refusal("links", problem))
        return
    item.sha256 = digest
    target = store / digest
    if target.exists():
        spool.unlink()
    else:
        spool.rename(target)
    item.stored = target


def _context(session: Session, store: BlobStore, settings: Settings, job_id: int,
             targets: Sequence[Dataset]) -> CheckContext:  # fmt: skip
    identifiers: set[str] = set()
    digests: set[str] = set()
    for dataset in targets:
        for row in catalog.view_rows_of_series(session, datasets.series_of(session, dataset)):
            identifiers.update((row.subject, row.study_instance_uid, row.series_instance_uid,
                                row.sop_instance_uid))  # fmt: skip
            digests.add(row.blob_digest)
    ensure_fingerprints(session, store, digests)
    pixel_digests, kinds = fingerprints_of(session, digests)
    job = jobs.job_by_id(session, job_id)
    declared = tools.declared_outputs(session, job.tool_version_id)[1] if job else []
    return CheckContext(
        identifiers=frozenset(identifiers),
        instance_digests=frozenset(digests),
        pixel_digests=pixel_digests,
        image_kinds=kinds,
        declared_outputs=tuple(declared),
        max_file_bytes=settings.release_max_file_mb * MB,
        max_request_bytes=settings.release_max_request_mb * MB,
        max_identifiers=settings.release_max_identifiers,
    )


def policy_of(targets: Sequence[Dataset]) -> ReviewPolicy:
    """The strictest review policy of the datasets (automatic only if all are synthetic)."""
    policy = max((d.review_policy for d in targets), key=POLICY_STRICTNESS.__getitem__,
                 default=ReviewPolicy.one_reviewer)  # fmt: skip
    if policy == ReviewPolicy.automatic and any(d.tier != Tier.synthetic for d in targets):
        return ReviewPolicy.one_reviewer  # set before a tier change, or by hand: fail closed
    return policy


def has_results(settings: Settings, job_id: int) -> bool:
    """Whether a job left anything in /results."""
    results = settings.resolved_jobs_root / str(job_id) / "results"
    try:
        # /results itself is the platform's folder; a link in its place is never followed.
        return results.is_dir() and not results.is_symlink() and any(results.iterdir())
    except OSError:
        return False


def _pending(session: Session, settings: Settings, job_id: int) -> Job | None:
    job = jobs.job_by_id(session, job_id)
    if job is None or not has_results(settings, job_id):
        return None
    if session.scalar(select(ReleaseRequest.id).where(ReleaseRequest.job_id == job_id)):
        return None
    return job


def prepare(
    session: Session, settings: Settings, store: BlobStore, job_id: int
) -> CheckContext | None:
    """Step 1 of turning an ended job's /results into a release request: what the checks
    compare with (None if the job left nothing or has a request). Pixel fingerprints made here
    are a cache; the caller commits them before the checks run, so no write transaction is
    held while they do."""
    job = _pending(session, settings, job_id)
    if job is None:
        return None
    targets = [datasets.get_dataset_by_id(session, i) for i in job.dataset_ids]
    return _context(session, store, settings, job_id, targets)


def _incoming(settings: Settings, job_id: int) -> Path:
    return settings.resolved_releases_root / f".incoming-job-{job_id}"


def check_results(settings: Settings, job_id: int, context: CheckContext) -> list[Gathered]:
    """Step 2, outside any transaction: copy /results (links not followed) and run the
    checks on the copies. An empty list: only empty folders."""
    incoming = _incoming(settings, job_id)
    shutil.rmtree(incoming, ignore_errors=True)  # left by a try that did not commit
    incoming.mkdir(parents=True, mode=0o700)
    gathered = gather(
        settings.resolved_jobs_root / str(job_id) / "results",
        incoming,
        context.max_file_bytes,
        context.max_request_bytes,
        settings.release_max_files,
    )
    if not gathered:
        shutil.rmtree(incoming)
        return []
    _run_checks(settings, gathered, context)
    return gathered


def record_request(
    session: Session, settings: Settings, job_id: int, gathered: list[Gathered]
) -> ReleaseRequest | None:
    """Step 3: the request, its files with their verdicts and what happens next (refused,
    approved, in review), each with its ledger entry. The caller removes /results after the
    commit (:func:`discard_results`)."""
    job = _pending(session, settings, job_id)
    if job is None or not gathered:
        return None
    policy = policy_of([datasets.get_dataset_by_id(session, i) for i in job.dataset_ids])
    request = ReleaseRequest(
        job_id=job_id,
        user_id=job.user_id,
        dataset_ids=list(job.dataset_ids),
        policy=policy.value,
        approvals_needed=max(1, APPROVALS[policy]),
        state=ReleaseState.checking,
    )
    session.add(request)
    session.flush()
    folder = settings.resolved_releases_root / str(request.id)
    shutil.rmtree(folder, ignore_errors=True)  # an id reused after a rolled-back try
    _incoming(settings, job_id).rename(folder)
    ledger.record(
        session,
        RELEASE_REQUESTED,
        actor=ledger.user_actor(job.user_id),
        subject=_subject(request),
        payload={"job": job_id, "files": len(gathered), "policy": policy.value},
    )
    for item in gathered:
        _record_file(session, request, item)
    _decide_after_checks(session, request, policy)
    return request


def _run_checks(settings: Settings, gathered: list[Gathered], context: CheckContext) -> None:
    to_check = [
        FileToCheck(g.name, g.stored, g.size, g.sha256) for g in gathered if g.stored is not None
    ]
    if not to_check:
        return
    try:
        results = run_checker(
            to_check,
            context,
            settings.release_extra_checks,
            settings.release_checker_memory_mb,
            settings.release_checker_timeout_s,
        )
    except CheckerFailedError as exc:
        for item in gathered:
            if item.stored is not None:
                item.findings.append(_refusal(
                    "checker", f"{exc}: nothing unchecked leaves; split the results into "
                    "smaller, plainer files, or tell the admins"))  # fmt: skip
        return
    by_name = {r.name: r for r in results}
    for item in gathered:
        if item.stored is not None:
            result = by_name[item.name]
            item.media_type = result.media_type
            item.findings.extend(result.findings)


def _record_file(session: Session, request: ReleaseRequest, item: Gathered) -> None:
    verdict = worst(item.findings)
    request.total_bytes += item.size
    session.add(
        ReleaseFile(
            request_id=request.id,
            path=item.name,
            size=item.size,
            sha256=item.sha256,
            media_type=item.media_type,
            verdict=verdict,
            checks=[
                {"check": f.check, "verdict": f.verdict.value, "reason": f.reason}
                for f in item.findings
            ],
            stored=item.stored is not None,
        )
    )
    ledger.record(
        session,
        RELEASE_CHECKED,
        actor=ledger.HOST_ACTOR,
        subject=_subject(request),
        payload={
            "file": jobs.public_text(item.name),
            "sha256": item.sha256,
            "size": item.size,
            "type": item.media_type,
            "verdict": verdict.value,
            "not_passed": sorted(set(iter_names(item.findings))),
        },
    )


def _move(session: Session, request: ReleaseRequest, state: ReleaseState, actor: str,
          reason: str = "") -> None:  # fmt: skip
    request.state = state
    request.reason = reason
    if state in (ReleaseState.approved, ReleaseState.rejected, ReleaseState.refused):
        request.decided_at = utcnow()
    ledger.record(
        session, RELEASE_STATE, actor=actor, subject=_subject(request),
        payload={"state": state.value},
    )  # fmt: skip


def _decide_after_checks(session: Session, request: ReleaseRequest, policy: ReviewPolicy) -> None:
    files = files_of(session, request)
    refused = [f for f in files if f.verdict == Verdict.refused]
    if refused:
        lines = [
            f"{f.path}: " + "; ".join(c["reason"] for c in f.checks if c["verdict"] == "refuse")
            for f in refused
        ]
        advice = ". Change the job so that these files are not written, and run it again."
        reason = "the checks refused: " + " | ".join(lines)[:4000] + advice
        _move(session, request, ReleaseState.refused, ledger.HOST_ACTOR, reason)
    elif policy == ReviewPolicy.automatic and all(f.verdict == Verdict.passed for f in files):
        _move(session, request, ReleaseState.approved, ledger.HOST_ACTOR)
    else:
        _move(session, request, ReleaseState.in_review, ledger.HOST_ACTOR)


def request_of_job(session: Session, job_id: int) -> ReleaseRequest | None:
    """The release request a job's results became, if any."""
    return session.scalars(select(ReleaseRequest).where(ReleaseRequest.job_id == job_id)).first()


def discard_results(settings: Settings, job_id: int) -> None:
    """Remove a job's /results once its request is committed: only the request's copies
    remain, and only its download hands them out."""
    shutil.rmtree(settings.resolved_jobs_root / str(job_id) / "results", ignore_errors=True)


# -- reading and reviewing ----------------------------------------------------------------------


def files_of(session: Session, request: ReleaseRequest) -> list[ReleaseFile]:
    """A request's files, by path."""
    session.flush()
    query = select(ReleaseFile).where(ReleaseFile.request_id == request.id)
    return list(session.scalars(query.order_by(ReleaseFile.path)))


def votes_of(session: Session, request: ReleaseRequest) -> list[ReleaseVote]:
    """A request's votes, oldest first."""
    query = select(ReleaseVote).where(ReleaseVote.request_id == request.id)
    return list(session.scalars(query.order_by(ReleaseVote.id)))


def job_of(session: Session, request: ReleaseRequest) -> tuple[str, list[str]]:
    """The tool (``name@version``) and command of the job the results came from."""
    job = jobs.job_by_id(session, request.job_id) if request.job_id is not None else None
    if job is None:
        return "", []
    return tools.declared_outputs(session, job.tool_version_id)[0], list(job.command)


def datasets_of(session: Session, request: ReleaseRequest) -> list[Dataset]:
    """The datasets the job used."""
    return [datasets.get_dataset_by_id(session, i) for i in request.dataset_ids]


def why_not_reviewer(session: Session, request: ReleaseRequest, user_id: int) -> str:
    """Why a user may not review this request ('' if they may)."""
    if user_id == request.user_id:
        return "you asked for this release: another steward of its datasets must review it"
    outside = [
        f"{d.name} v{d.version}"
        for d in datasets_of(session, request)
        if not datasets.is_steward(session, d, user_id)
    ]
    if outside:
        return "reviewers must steward every dataset the job used; you do not steward " + ", ".join(
            outside
        )
    return ""


def get_request(session: Session, principal: Principal, request_id: int) -> ReleaseRequest:
    """A request its requester, a possible reviewer, an admin or an auditor may read."""
    request = session.get(ReleaseRequest, request_id)
    if request is not None and (
        request.user_id == principal.user_id
        or principal.role.value in ("admin", "auditor")
        or (principal.role.value == "steward"
            and not why_not_reviewer(session, request, principal.user_id))
    ):  # fmt: skip
        return request
    raise NotAllowedError(f"no release request {request_id} of yours or for you to review")


def list_requests(
    session: Session, principal: Principal, to_review: bool = False, limit: int = 100
) -> list[ReleaseRequest]:
    """Your requests, newest first; or (``to_review``) those waiting for your vote."""
    if not to_review:
        return list(
            session.scalars(
                select(ReleaseRequest)
                .where(ReleaseRequest.user_id == principal.user_id)
                .order_by(ReleaseRequest.id.desc())
                .limit(limit)
            )
        )
    voted = select(ReleaseVote.request_id).where(ReleaseVote.reviewer_id == principal.user_id)
    waiting = session.scalars(
        select(ReleaseRequest)
        .where(ReleaseRequest.state == ReleaseState.in_review, ReleaseRequest.id.not_in(voted))
        .order_by(ReleaseRequest.id)
    )
    return [r for r in waiting if not why_not_reviewer(session, r, principal.user_id)][:limit]


def _for_reviewer(session: Session, principal: Principal, request_id: int) -> ReleaseRequest:
    request = session.get(ReleaseRequest, request_id)
    if request is None:
        raise NotAllowedError(f"no release request {request_id} for you to review")
    reason = why_not_reviewer(session, request, principal.user_id)
    if reason:
        raise NotAllowedError(reason)
    return request


def vote(
    session: Session,
    principal: Principal,
    request_id: int,
    decision: VoteDecision,
    comment: str,
) -> ReleaseRequest:
    """A reviewer approves or rejects (a reject says what the requester should change)."""
    request = _for_reviewer(session, principal, request_id)
    if request.state != ReleaseState.in_review:
        raise ReleaseStateError(f"release {request_id} is {request.state.value}, not in review")
    if any(v.reviewer_id == principal.user_id for v in votes_of(session, request)):
        raise ReleaseStateError(
            f"you already voted on release {request_id}: the next vote must come from "
            "another reviewer"
        )
    if decision == VoteDecision.reject and not comment.strip():
        raise ReleaseError("a reject must say what the requester should change (--reason)")
    session.add(
        ReleaseVote(
            request_id=request.id,
            reviewer_id=principal.user_id,
            decision=decision,
            comment=comment,
        )
    )
    actor = ledger.user_actor(principal.user_id)
    ledger.record(
        session, RELEASE_VOTED, actor=actor, subject=_subject(request),
        payload={"decision": decision.value},
    )  # fmt: skip
    if decision == VoteDecision.reject:
        _move(session, request, ReleaseState.rejected, actor, comment.strip())
        return request
    session.flush()
    approvals = session.scalar(
        select(func.count()).where(
            ReleaseVote.request_id == request.id, ReleaseVote.decision == VoteDecision.approve
        )
    )
    if int(approvals or 0) >= request.approvals_needed:
        _move(session, request, ReleaseState.approved, actor)
    return request


def _file(session: Session, request: ReleaseRequest, file_id: int) -> ReleaseFile:
    item = session.get(ReleaseFile, file_id)
    if item is None or item.request_id != request.id:
        raise NotAllowedError(f"release {request.id} has no file {file_id}")
    return item


def _verified_copy(settings: Settings, request: ReleaseRequest, item: ReleaseFile) -> Path:
    path = settings.resolved_releases_root / str(request.id) / item.sha256
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MB):
            digest.update(chunk)
    if digest.hexdigest() != item.sha256:
        raise ReleaseError(
            f"the stored copy of {item.path} no longer matches its hash: it is not handed "
            "out; tell the admins"
        )
    return path


def open_download(
    session: Session, settings: Settings, principal: Principal, request_id: int, file_id: int
) -> tuple[ReleaseFile, Path]:
    """An approved file for its requester: the verified stored copy (a ledger event)."""
    request = session.get(ReleaseRequest, request_id)
    if request is None or request.user_id != principal.user_id:
        raise NotAllowedError(f"no release request {request_id} of yours")
    if request.state != ReleaseState.approved:
        raise ReleaseStateError(f"release {request_id} is {request.state.value}: only approved "
                                "files may be downloaded")  # fmt: skip
    item = _file(session, request, file_id)
    if not item.stored or item.verdict == Verdict.refused:
        raise ReleaseStateError(f"{item.path} was refused by the checks and is not kept")
    path = _verified_copy(settings, request, item)
    ledger.record(
        session,
        RELEASE_DOWNLOADED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(request),
        payload={"file": jobs.public_text(item.path), "sha256": item.sha256},
    )
    return item, path


def open_preview(
    session: Session, settings: Settings, principal: Principal, request_id: int, file_id: int
) -> tuple[ReleaseFile, bytes]:
    """A text, CSV or picture file for a reviewer to read in the browser (the first MB of
    text); never a refused file, never a binary (a ledger event)."""
    request = _for_reviewer(session, principal, request_id)
    item = _file(session, request, file_id)
    if item.verdict == Verdict.refused or not item.stored:
        raise ReleaseStateError(f"{item.path} was refused by the checks: it is not shown")
    if item.media_type not in PREVIEW_TYPES:
        raise ReleaseStateError(
            f"{item.path} is {item.media_type or 'unknown'}: only text, CSV, JSON and "
            "pictures open in the browser; reviewers never download files"
        )
    path = _verified_copy(settings, request, item)
    with path.open("rb") as handle:
        data = handle.read(PREVIEW_LIMIT if item.media_type.startswith(("text/", "application/"))
                           else item.size)  # fmt: skip
    ledger.record(
        session,
        RELEASE_PREVIEWED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(request),
        payload={"file": jobs.public_text(item.path)},
    )
    return item, data
