"""The ingest pipeline: sources → workers (de-identify, stage) → store commit → catalogue.

Workers do the CPU work and stage blobs; this process commits the staged blobs in groups
(one filesystem sync per group), then writes the group's rows in one transaction. A kill at any
point leaves no half-written blob or row, and re-running the same command completes the batch
(instances already catalogued count as duplicates).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.catalog import service as catalog
from insitu.core.platform import Platform
from insitu.db import session_scope, utcnow
from insitu.ingest import quarantine
from insitu.ingest.clinical import ClinicalMapping, parse_rows
from insitu.ingest.deid.allowlist import AllowList, load_allow_list
from insitu.ingest.deid.ocr import TesseractDetector
from insitu.ingest.deid.table import Options
from insitu.ingest.models import BatchStatus, IngestBatch, IngestError, QuarantinedInstance
from insitu.ingest.processor import InstanceProcessor, Outcome, WorkerConfig
from insitu.ingest.pseudonyms import Pseudonymizer
from insitu.ingest.sources import SourceItem
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.storage.local import LocalBlobStore
from insitu.storage.protocol import StagedBlob

GROUP_SIZE = 256
REPORT_LIST_LIMIT = 1000
# Head CT and MR volumes hold a face that can be rebuilt: insitu does not deface, so the QA
# report names such series for the steward (at least this many slices of a head region).
FACE_RISK_BODY_PARTS = frozenset({"HEAD", "BRAIN", "HEADNECK", "SKULL", "FACE", "ORBIT", "NECK"})
FACE_RISK_MIN_INSTANCES = 20

_processor: InstanceProcessor | None = None


def _init_worker(config: WorkerConfig) -> None:
    global _processor  # noqa: PLW0603 - one processor per worker process, built once
    if config.niceness:
        os.nice(config.niceness)
    _processor = InstanceProcessor(config)


def _work(item: SourceItem) -> Outcome:
    if _processor is None:
        raise RuntimeError("worker used before _init_worker")
    if item.error is not None:
        return Outcome(item.source, _processor.pseudonymizer.path(item.source), error=item.error)
    try:
        data = item.read()
    except OSError as exc:
        return Outcome(
            item.source, _processor.pseudonymizer.path(item.source), error=f"cannot read: {exc}"
        )
    return _processor.process(item.source, data)


@dataclass
class IngestResult:
    """Counts and the QA report of one batch; ``failures`` adds real paths for the terminal."""

    batch_id: int
    report: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """How many files and clinical rows failed."""
        counts = self.report["counts"]
        return int(counts["failed"]) + int(counts["clinical_failed"])


@dataclass
class _Tally:
    files: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    failed: int = 0
    clinical_rows: int = 0
    clinical_failed: int = 0
    bytes: int = 0
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    quarantine_list: list[dict[str, str]] = field(default_factory=list)
    head_series: Counter[str] = field(default_factory=Counter)
    failure_list: list[dict[str, str]] = field(default_factory=list)
    terminal_failures: list[dict[str, str]] = field(default_factory=list)
    unrecorded: list[IngestError] = field(default_factory=list)

    def fail(self, source: str, path_hmac: str, reason: str, kind: str = "file") -> None:
        if kind == "file":
            self.failed += 1
        else:
            self.clinical_failed += 1
        self.unrecorded.append(IngestError(kind=kind, path_hmac=path_hmac, reason=reason))
        if len(self.failure_list) < REPORT_LIST_LIMIT:
            self.failure_list.append({"kind": kind, "path_hmac": path_hmac, "reason": reason})
            self.terminal_failures.append({"kind": kind, "path": source, "reason": reason})


def deid_record(options: Options, allow_list: AllowList) -> str:
    """What is stored with each instance about its de-identification: the options and the
    allow-list's fingerprint (a re-ingest under either changed is a conflict, not a copy)."""
    return f"{options.fingerprint} allow-list:{allow_list.fingerprint}"


def start_batch(
    session: Session,
    source: str,
    site: str,
    options: Options,
    actor: str = ledger.HOST_ACTOR,
    record: str | None = None,
) -> IngestBatch:
    """Record that a batch started (committed at once, so a crash leaves a trace)."""
    batch = IngestBatch(
        source=source,
        site=site,
        deid_options=record or options.fingerprint,
        status=BatchStatus.running,
    )
    session.add(batch)
    session.flush()
    ledger.record(
        session,
        events.INGEST_BATCH_STARTED,
        actor=actor,
        subject=f"ingest-batch:{batch.id}",
        payload={"source": source, "site": site, "options": record or options.fingerprint},
    )
    return batch


def batch_manifest_hash(session: Session, batch_id: int) -> str:
    """SHA-256 over the batch's catalogued and quarantined instances, one sorted line each:
    ``<kind> <SOP Instance UID> <blob SHA-256>``."""
    digest = hashlib.sha256()
    for uid, blob in catalog.iter_batch_instances(session, batch_id):
        digest.update(f"instance {uid} {blob}\n".encode())
    quarantined = session.execute(
        select(QuarantinedInstance.sop_instance_uid, QuarantinedInstance.blob_digest)
        .where(QuarantinedInstance.batch_id == batch_id)
        .order_by(QuarantinedInstance.sop_instance_uid)
    )
    for uid, blob in quarantined:
        digest.update(f"quarantined {uid} {blob}\n".encode())
    return digest.hexdigest()


def finish_batch(session: Session, batch_id: int, report: dict[str, Any], actor: str) -> None:
    """Mark a batch completed and put its counts and manifest hash on the ledger."""
    batch = session.get(IngestBatch, batch_id)
    if batch is None:
        raise RuntimeError(f"ingest batch {batch_id} vanished")
    batch.status = BatchStatus.completed
    batch.finished_at = utcnow()
    batch.report = report
    counts = {k: int(v) for k, v in report["counts"].items()}
    ledger.record(
        session,
        events.INGEST_BATCH_FINISHED,
        actor=actor,
        subject=f"ingest-batch:{batch_id}",
        payload={"counts": counts, "manifest_sha256": batch_manifest_hash(session, batch_id)},
    )


def _existing_quarantine(session: Session, uids: Sequence[str]) -> dict[str, tuple[str, str]]:
    if not uids:
        return {}
    rows = session.execute(
        select(
            QuarantinedInstance.sop_instance_uid,
            QuarantinedInstance.blob_digest,
            QuarantinedInstance.deid_options,
        ).where(QuarantinedInstance.sop_instance_uid.in_(uids))
    )
    return {uid: (digest, opts) for uid, digest, opts in rows}


class _GroupWriter:
    """Commits one group of outcomes: blobs first, then rows, in one transaction."""

    def __init__(self, platform: Platform, batch_id: int, site: str, record: str) -> None:
        self.platform = platform
        self.batch_id = batch_id
        self.site = site
        self.record = record
        self.tally = _Tally()

    def write(self, outcomes: Sequence[Outcome]) -> None:
        tally = self.tally
        good = [(o, o.staged) for o in outcomes if o.error is None and o.staged is not None]
        with session_scope(self.platform.sessions) as session:
            uids = [o.attributes["sop_instance_uid"] for o, _ in good]
            known = {
                uid: (e.blob_digest, e.deid_options)
                for uid, e in catalog.existing_instances(session, uids).items()
            }
            known.update(_existing_quarantine(session, uids))
            alternates = [o.alternate_uid for o, _ in good if o.alternate_uid]
            other_choice = set(catalog.existing_instances(session, alternates))
            other_choice.update(_existing_quarantine(session, alternates))
            new_items: list[tuple[Outcome, StagedBlob]] = []
            drop: list[StagedBlob] = []
            seen: dict[str, tuple[str, str]] = {}
            for outcome, staged in good:
                uid = outcome.attributes["sop_instance_uid"]
                previous = known.get(uid) or seen.get(uid)
                if previous is None and outcome.alternate_uid in other_choice:
                    drop.append(staged)
                    tally.fail(
                        outcome.source,
                        outcome.path_hmac,
                        "conflict: this instance was ingested before with the other UID choice "
                        "(retain-uids on one run, off on the other); re-run with the earlier "
                        "options or ask an admin to remove the earlier copy",
                    )
                    continue
                if previous is None:
                    seen[uid] = (staged.digest, self.record)
                    new_items.append((outcome, staged))
                    continue
                drop.append(staged)
                digest, opts = previous
                if digest == staged.digest:
                    tally.duplicates += 1
                elif opts != self.record:
                    tally.fail(
                        outcome.source,
                        outcome.path_hmac,
                        f"conflict: this instance was ingested before with options "
                        f"[{opts}], now [{self.record}]; re-run with the earlier "
                        "options or ask an admin to remove the earlier copy",
                    )
                else:
                    tally.fail(
                        outcome.source,
                        outcome.path_hmac,
                        "conflict: an instance with the same SOP Instance UID but different "
                        "content is already catalogued; check the export for reused UIDs",
                    )
            keep = [staged for _, staged in new_items]
            # A duplicate of a kept blob has a temp file of its own: discard by temp file.
            kept_tokens = {k.token for k in keep if k.token}
            self.platform.store.commit(keep)
            self.platform.store.discard([d for d in drop if d.token not in kept_tokens])
            catalogued = []
            for outcome, staged in new_items:
                tally.actions.update(outcome.actions)
                tally.bytes += staged.size
                attrs = outcome.attributes
                if outcome.quarantine_reason:
                    tally.quarantined += 1
                    session.add(
                        quarantine.held(
                            attrs,
                            site=self.site,
                            blob=(staged.digest, staged.size),
                            reason=(
                                outcome.quarantine_code or "burned-in-absent",
                                outcome.quarantine_reason,
                            ),
                            deid_options=self.record,
                            batch_id=self.batch_id,
                        )
                    )
                    if len(tally.quarantine_list) < REPORT_LIST_LIMIT:
                        tally.quarantine_list.append(
                            {
                                "sop_instance_uid": attrs["sop_instance_uid"],
                                "reason": outcome.quarantine_reason,
                                "reason_code": outcome.quarantine_code or "burned-in-absent",
                            }
                        )
                    continue
                tally.ingested += 1
                if attrs.get("modality") in ("CT", "MR", "PT") and (
                    attrs.get("body_part_examined") in FACE_RISK_BODY_PARTS
                ):
                    tally.head_series[attrs["series_instance_uid"]] += 1
                catalogued.append(
                    {
                        **attrs,
                        "blob_digest": staged.digest,
                        "size": staged.size,
                        "deid_options": self.record,
                    }
                )
            catalog.register_instances(session, catalogued, self.site, self.batch_id)
            for outcome in outcomes:
                if outcome.error is not None:
                    tally.fail(outcome.source, outcome.path_hmac, outcome.error)
            self.finish_group(session)

    def finish_group(self, session: Session) -> None:
        """Write the group's error rows and the batch counters into the open transaction."""
        for error in self.tally.unrecorded:
            error.batch_id = self.batch_id
            session.add(error)
        self.tally.unrecorded = []
        batch = session.get(IngestBatch, self.batch_id)
        if batch is None:
            raise RuntimeError(f"ingest batch {self.batch_id} vanished")
        tally = self.tally
        batch.ingested = tally.ingested
        batch.duplicates = tally.duplicates
        batch.quarantined = tally.quarantined
        batch.failed = tally.failed + tally.clinical_failed
        batch.clinical_rows = tally.clinical_rows


def run_workers(
    items: Iterable[SourceItem], config: WorkerConfig, workers: int, start_method: str
) -> Iterator[Outcome]:
    """Each item through ``config``'s engine, in this process or a pool; unordered."""
    if workers <= 1:
        _init_worker(config)
        for item in items:
            yield _work(item)
        return
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(["insitu.ingest.service"])
    with context.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
        yield from pool.imap_unordered(_work, items, chunksize=4)


def ingest(
    platform: Platform,
    items: Iterable[SourceItem],
    *,
    site: str,
    options: Options,
    source_kind: str = "cli",
    workers: int = 1,
    clinical: tuple[Path, ClinicalMapping] | None = None,
    worker_niceness: int = 0,
    on_progress: Callable[[int], None] | None = None,
    start_method: str = "forkserver",
    actor: str = ledger.HOST_ACTOR,
) -> IngestResult:
    """Run one batch. Bad files and rows are recorded and the batch goes on.

    ``start_method`` is how worker processes start: ``forkserver`` is safe in threaded hosts
    (the API server, the listener); the CLI passes ``fork``, which takes the forkserver's
    start-up off the critical path of a one-shot command.
    """
    started = time.perf_counter()
    if platform.settings.ocr == "tesseract":
        TesseractDetector()  # no tesseract: fail before any work, not in every worker
    allow_list = load_allow_list(platform.settings.deid_allow_list_extra)
    record = deid_record(options, allow_list)
    expire_quarantine(platform, actor)
    with session_scope(platform.sessions) as session:
        batch_id = start_batch(session, source_kind, site, options, actor, record).id
    if isinstance(platform.store, LocalBlobStore):
        platform.store.clean_temp()
    writer = _GroupWriter(platform, batch_id, site, record)
    config = WorkerConfig(
        secret=platform.settings.secret_bytes(),
        options=options,
        site=site,
        store=platform.store,
        allow_list=allow_list,
        ocr=platform.settings.ocr == "tesseract",
        niceness=worker_niceness,
    )
    group: list[Outcome] = []
    for outcome in run_workers(items, config, workers, start_method):
        writer.tally.files += 1
        group.append(outcome)
        if on_progress is not None:
            on_progress(1)
        if len(group) >= GROUP_SIZE:
            writer.write(group)
            group = []
    writer.write(group)
    if clinical is not None:
        _ingest_clinical(platform, writer, *clinical)
    elapsed = time.perf_counter() - started
    report = _report(writer.tally, batch_id, site, options, elapsed, allow_list)
    with session_scope(platform.sessions) as session:
        finish_batch(session, batch_id, report, actor)
    return IngestResult(batch_id, report, writer.tally.terminal_failures)


def expire_quarantine(platform: Platform, actor: str = ledger.HOST_ACTOR) -> quarantine.Outcome:
    """Apply the quarantine retention setting: its own transaction, then the blob deletes."""
    with session_scope(platform.sessions) as session:
        outcome = quarantine.expire(session, platform.settings.quarantine_retention_days, actor)
    quarantine.delete_blobs(platform.store, outcome.unreferenced)
    return outcome


def _ingest_clinical(
    platform: Platform, writer: _GroupWriter, path: Path, mapping: ClinicalMapping
) -> None:
    pseudonymizer = Pseudonymizer(platform.settings.secret_bytes())
    path_hmac = pseudonymizer.path(str(path))
    tally = writer.tally
    with session_scope(platform.sessions) as session:
        rows = list(parse_rows(path, mapping, writer.site, pseudonymizer))
        good = [r for r in rows if r.error is None and r.pseudonym and r.data is not None]
        ids = catalog.ensure_subjects(
            session, {r.pseudonym: writer.site for r in good if r.pseudonym}
        )
        for row in rows:
            if row.error is not None:
                tally.fail(f"{path} {row.error}", path_hmac, row.error, kind="clinical")
                continue
            if row.pseudonym is None or row.data is None:
                continue
            catalog.upsert_clinical(session, ids[row.pseudonym], row.data, writer.batch_id)
            tally.clinical_rows += 1
        writer.finish_group(session)


_FACE_RISK_REASON = (
    "head CT/MR/PET volume: a face can be rebuilt from it and insitu does not deface; "
    "treat the series as identifiable (limit its use, or deface it before ingest)"
)


def _report(
    tally: _Tally,
    batch_id: int,
    site: str,
    options: Options,
    elapsed: float,
    allow_list: AllowList,
) -> dict[str, Any]:
    actions: dict[str, dict[str, int]] = {}
    for (label, action), count in sorted(tally.actions.items()):
        actions.setdefault(label, {})[action] = count
    return {
        "batch_id": batch_id,
        "site": site,
        "options": sorted(o.value for o in options.enabled),
        "profile": "DICOM PS3.15 Annex E Table E.1-1 Basic Application Confidentiality Profile",
        "allow_list": {
            "version": allow_list.version,
            "fingerprint": allow_list.fingerprint,
            "sources": list(allow_list.sources),
        },
        "counts": {
            "files": tally.files,
            "ingested": tally.ingested,
            "duplicates": tally.duplicates,
            "quarantined": tally.quarantined,
            "failed": tally.failed,
            "clinical_rows": tally.clinical_rows,
            "clinical_failed": tally.clinical_failed,
        },
        "throughput": {
            "seconds": round(elapsed, 3),
            "files_per_second": round(tally.files / elapsed, 1) if elapsed else None,
            "megabytes_per_second": round(tally.bytes / 1e6 / elapsed, 1) if elapsed else None,
        },
        "actions": actions,
        "quarantined": tally.quarantine_list,
        "face_risk_series": [
            {"series_instance_uid": uid, "instances": count, "reason": _FACE_RISK_REASON}
            for uid, count in sorted(tally.head_series.items())
            if count >= FACE_RISK_MIN_INSTANCES
        ][:REPORT_LIST_LIMIT],
        "failures": tally.failure_list,
        "action_legend": {
            "X": "removed",
            "Z": "emptied",
            "D": "dummy value",
            "U": "UID pseudonymised",
            "K": "kept",
            "C": "cleaned (kept if on the allow-list, else dummy)",
            "A": "not in the table, kept by the allow-list after its value rule",
            "S": "date shifted",
            "P": "subject pseudonym",
        },
    }


def get_batch(session: Session, batch_id: int) -> IngestBatch | None:
    """One batch with its report."""
    return session.get(IngestBatch, batch_id)
