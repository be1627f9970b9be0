"""Re-scrub what is already stored: re-apply the current de-identification engine to every
instance de-identified under an older engine or allow-list (``insitu ingest rescrub``).

Each outdated instance is read from its blob and run through the engine in re-scrub mode
(its pseudonyms, UIDs and dates stay: they were made when it was ingested). Then:

- the new blob is committed, and the catalogue fields are rewritten from it, so a field
  the current rules no longer keep is purged; an instance the burned-in text check now
  holds moves from the catalogue to the quarantine;
- every released or published dataset version holding a changed series is invalidated with
  the reason "re-de-identified", and a new draft version of it is made for its stewards to
  check and release (content changed: a person decides, not the host);
- one ledger entry records the counts, in the same transaction;
- after the commit, the views of the invalidated versions and the old blobs are deleted.

``--dry-run`` does the de-identification work and reports what would change, storing
nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.catalog import service as catalog
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Dataset, DatasetSeries, DatasetState
from insitu.datasets.view import remove_view
from insitu.db import purge_old_row_versions, session_scope
from insitu.ingest import quarantine
from insitu.ingest.deid.allowlist import AllowList, load_allow_list
from insitu.ingest.deid.engine import Rescrub
from insitu.ingest.deid.table import Options
from insitu.ingest.models import QuarantinedInstance
from insitu.ingest.processor import Outcome, WorkerConfig
from insitu.ingest.service import deid_record, run_workers
from insitu.ingest.sources import SourceItem
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.storage.protocol import StagedBlob

RESCRUB_REASON = "re-de-identified"
# Tables whose rows a re-scrub rewrites or deletes: old row versions are purged from disk.
_PURGED_TABLES = ("instances", "series", "studies", "quarantine", "dataset_statistics")
INGEST_RESCRUBBED = events.register(
    "ingest.rescrubbed",
    "stored instances were de-identified again under the current engine: counts and datasets",
)


@dataclass(frozen=True)
class _Stored:
    sop_instance_uid: str
    blob_digest: str
    record: str
    quarantined: bool
    series_id: int | None


@dataclass
class RescrubReport:
    """What a re-scrub changed (or, dry, would change)."""

    dry_run: bool
    checked: int = 0
    up_to_date: int = 0
    rewritten: int = 0
    moved_to_quarantine: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    invalidated: list[str] = field(default_factory=list)
    new_versions: list[str] = field(default_factory=list)
    old_blobs_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        return {
            "dry_run": self.dry_run,
            "checked": self.checked,
            "up_to_date": self.up_to_date,
            "rewritten": self.rewritten,
            "moved_to_quarantine": self.moved_to_quarantine,
            "failed": self.failed,
            "removed_or_changed": dict(self.actions.most_common()),
            "invalidated": self.invalidated,
            "new_versions": self.new_versions,
            "old_blobs_deleted": self.old_blobs_deleted,
        }


def stored_options(record: str) -> Options:
    """The options an instance was de-identified with, from its stored record."""
    fingerprint = record.split(" ", 1)[0]
    return Options.parse("none" if fingerprint == "basic" else fingerprint)


def _outdated(session: Session, allow_list: AllowList) -> tuple[int, list[_Stored]]:
    stored = [
        _Stored(i.sop_instance_uid, i.blob_digest, i.deid_options, False, i.series_id)
        for i in catalog.stored_instances(session)
    ]
    stored += [
        _Stored(uid, digest, record, True, None)
        for uid, digest, record in session.execute(
            select(
                QuarantinedInstance.sop_instance_uid,
                QuarantinedInstance.blob_digest,
                QuarantinedInstance.deid_options,
            ).order_by(QuarantinedInstance.id)
        )
    ]
    outdated = [s for s in stored if s.record != deid_record(stored_options(s.record), allow_list)]
    return len(stored), outdated


def _items(platform: Platform, rows: Sequence[_Stored]) -> Iterator[SourceItem]:
    for row in rows:
        try:
            data = platform.store.get(row.blob_digest)
        except Exception as exc:  # noqa: BLE001 - a missing blob is reported, not fatal
            yield SourceItem(row.sop_instance_uid, error=f"blob unreadable ({type(exc).__name__})")
            continue
        yield SourceItem(row.sop_instance_uid, data=data)


def rescrub(
    platform: Platform,
    *,
    dry_run: bool = False,
    workers: int = 1,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    start_method: str = "forkserver",
) -> RescrubReport:
    """Re-apply the current engine to every outdated stored instance (see the module)."""
    settings = platform.settings
    allow_list = load_allow_list(settings.deid_allow_list_extra)
    report = RescrubReport(dry_run=dry_run)
    with session_scope(platform.sessions) as session:
        report.checked, outdated = _outdated(session, allow_list)
    report.up_to_date = report.checked - len(outdated)
    if on_total is not None:
        on_total(len(outdated))
    groups: dict[str, list[_Stored]] = {}
    for row in outdated:
        groups.setdefault(row.record, []).append(row)
    done: list[tuple[_Stored, Outcome, StagedBlob, str]] = []
    for record, rows in groups.items():
        options = stored_options(record)
        config = WorkerConfig(
            secret=settings.secret_bytes(),
            options=options,
            site=settings.site,
            store=platform.store,
            allow_list=allow_list,
            ocr=settings.ocr == "tesseract",
            rescrub=Rescrub(remap_other_uids="allow-list:" not in record),
        )
        by_uid = {r.sop_instance_uid: r for r in rows}
        new_record = deid_record(options, allow_list)
        for outcome in run_workers(_items(platform, rows), config, workers, start_method):
            if on_progress is not None:
                on_progress(1)
            row = by_uid[outcome.source]
            if outcome.error is not None or outcome.staged is None:
                report.failed.append(
                    {"sop_instance_uid": row.sop_instance_uid, "reason": outcome.error or "?"}
                )
                continue
            report.actions.update(f"{label} {action}" for label, action in outcome.actions)
            done.append((row, outcome, outcome.staged, new_record))
    staged = [s for _, _, s, _ in done]
    if dry_run:
        platform.store.discard(staged)
        report.rewritten = sum(1 for _, o, _, _ in done if not o.quarantine_reason)
        report.moved_to_quarantine = sum(
            1 for r, o, _, _ in done if o.quarantine_reason and not r.quarantined
        )
        return report
    platform.store.commit(staged)
    with session_scope(platform.sessions) as session:
        old_digests, affected_series = _write(session, done, report)
        held = _new_versions(session, affected_series, report)
        ledger.record(
            session,
            INGEST_RESCRUBBED,
            actor=ledger.HOST_ACTOR,
            subject="catalog",
            payload={
                "checked": report.checked,
                "rewritten": report.rewritten,
                "moved_to_quarantine": report.moved_to_quarantine,
                "failed": len(report.failed),
                "allow_list": allow_list.fingerprint,
                "invalidated": report.invalidated,
                "new_versions": report.new_versions,
            },
        )
    _collect(platform, old_digests, held, report)
    purge_old_row_versions(platform.engine, _PURGED_TABLES)
    return report


def _write(
    session: Session,
    done: Sequence[tuple[_Stored, Outcome, StagedBlob, str]],
    report: RescrubReport,
) -> tuple[set[str], set[int]]:
    old_digests: set[str] = set()
    affected: set[int] = set()
    for row, outcome, blob, record in done:
        old_digests.add(row.blob_digest)
        attributes = outcome.attributes
        if row.quarantined:
            held = quarantine.blob_of(session, row.sop_instance_uid)
            if held is not None:
                held.blob_digest, held.size, held.deid_options = blob.digest, blob.size, record
                if outcome.quarantine_reason:
                    held.reason = outcome.quarantine_reason
                    held.reason_code = outcome.quarantine_code or held.reason_code
            report.rewritten += 1
            continue
        if row.series_id is not None:
            affected.add(row.series_id)
        if outcome.quarantine_reason:
            removed = catalog.remove_instance(session, row.sop_instance_uid)
            site = catalog.site_of_subject(session, attributes["subject_pseudonym"]) or ""
            session.add(
                quarantine.held(
                    attributes,
                    site=site,
                    blob=(blob.digest, blob.size),
                    reason=(
                        outcome.quarantine_code or "burned-in-absent",
                        outcome.quarantine_reason,
                    ),
                    deid_options=record,
                    batch_id=None,
                )
            )
            if removed is not None:
                report.moved_to_quarantine += 1
            continue
        catalog.replace_instance_blob(
            session, row.sop_instance_uid, attributes, blob.digest, blob.size, record
        )
        report.rewritten += 1
    session.flush()
    return old_digests, affected


def _new_versions(
    session: Session, series_ids: set[int], report: RescrubReport
) -> list[tuple[str, int]]:
    """Invalidate frozen versions holding a changed series; make a draft successor of each."""
    if not series_ids:
        return []
    versions = list(
        session.scalars(
            select(Dataset)
            .where(
                Dataset.id.in_(
                    select(DatasetSeries.dataset_id).where(
                        DatasetSeries.series_id.in_(sorted(series_ids))
                    )
                ),
                Dataset.state.in_([DatasetState.released, DatasetState.published]),
            )
            .order_by(Dataset.id)
        )
    )
    for dataset in versions:
        successor = datasets.new_version(session, dataset, None)
        datasets.invalidate(session, dataset, RESCRUB_REASON, None)
        datasets.forget_statistics(session, dataset)
        report.invalidated.append(f"{dataset.name} v{dataset.version}")
        report.new_versions.append(f"{successor.name} v{successor.version}")
    return [(d.name, d.version) for d in versions]


def _collect(
    platform: Platform,
    old_digests: set[str],
    held: Sequence[tuple[str, int]],
    report: RescrubReport,
) -> None:
    """After the commit: the invalidated versions' views go, then the old blobs."""
    with session_scope(platform.sessions) as session:
        for name, version in held:
            refreshed = datasets.get_dataset(session, name, version)
            if refreshed is not None:
                remove_view(platform.settings.resolved_views_root, refreshed)
        unreferenced = quarantine.unreferenced_blobs(session, old_digests)
    for digest in unreferenced:
        platform.store.delete(digest)
    report.old_blobs_deleted = len(unreferenced)
