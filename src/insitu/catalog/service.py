"""Catalogue service functions: register de-identified instances, search. They never commit."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select, func, insert, select
from sqlalchemy.orm import Session

from insitu.catalog.models import ClinicalRecord, Instance, Series, Study, Subject
from insitu.db import utcnow


class RegisterStatus(enum.StrEnum):
    """What happened to one instance offered to the catalogue."""

    added = "added"
    duplicate = "duplicate"
    conflict = "conflict"


@dataclass(frozen=True)
class ExistingInstance:
    """What the catalogue already holds for a SOP Instance UID."""

    blob_digest: str
    deid_options: str


def existing_instances(
    session: Session, sop_instance_uids: Sequence[str]
) -> dict[str, ExistingInstance]:
    """Catalogued instances among these UIDs."""
    if not sop_instance_uids:
        return {}
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.blob_digest, Instance.deid_options).where(
            Instance.sop_instance_uid.in_(sop_instance_uids)
        )
    )
    return {uid: ExistingInstance(digest, opts) for uid, digest, opts in rows}


def _id_map(session: Session, stmt: Select[str, int]) -> dict[str, int]:
    """A (key, id) query as a dict. (A Result has .keys(), so dict() on it would misread it.)"""
    return dict(session.execute(stmt).all())


def ensure_subjects(session: Session, subjects: Mapping[str, str]) -> dict[str, int]:
    """Ids of subjects by pseudonym, creating missing ones (``subjects``: pseudonym → site)."""
    if not subjects:
        return {}
    found = _id_map(
        session,
        select(Subject.pseudonym, Subject.id).where(Subject.pseudonym.in_(list(subjects))),
    )
    for pseudonym, site in subjects.items():
        if pseudonym not in found:
            subject = Subject(pseudonym=pseudonym, site=site)
            session.add(subject)
            session.flush()
            found[pseudonym] = subject.id
    return found


def register_instances(
    session: Session, items: Sequence[Mapping[str, Any]], site: str, batch_id: int | None
) -> None:
    """Add new de-identified instances with their subject, study and series rows.

    ``items`` are ``catalog_attributes`` dicts plus ``blob_digest``, ``size`` and
    ``deid_options``; callers have already removed duplicates and conflicts.
    """
    if not items:
        return
    subject_ids = ensure_subjects(session, {i["subject_pseudonym"]: site for i in items})
    study_ids = _id_map(
        session,
        select(Study.study_instance_uid, Study.id).where(
            Study.study_instance_uid.in_({i["study_instance_uid"] for i in items})
        ),
    )
    series_ids = _id_map(
        session,
        select(Series.series_instance_uid, Series.id).where(
            Series.series_instance_uid.in_({i["series_instance_uid"] for i in items})
        ),
    )
    for item in items:
        if item["study_instance_uid"] not in study_ids:
            study = Study(
                study_instance_uid=item["study_instance_uid"],
                subject_id=subject_ids[item["subject_pseudonym"]],
                study_date=item["study_date"],
                study_description=item["study_description"],
            )
            session.add(study)
            session.flush()
            study_ids[study.study_instance_uid] = study.id
        if item["series_instance_uid"] not in series_ids:
            series = Series(
                series_instance_uid=item["series_instance_uid"],
                study_id=study_ids[item["study_instance_uid"]],
                modality=item["modality"],
                body_part_examined=item["body_part_examined"],
                manufacturer=item["manufacturer"],
                manufacturer_model_name=item["manufacturer_model_name"],
                series_description=item["series_description"],
                series_date=item["series_date"],
                series_number=item["series_number"],
            )
            session.add(series)
            session.flush()
            series_ids[series.series_instance_uid] = series.id
    now = utcnow()
    session.execute(
        insert(Instance),
        [
            {
                "sop_instance_uid": i["sop_instance_uid"],
                "series_id": series_ids[i["series_instance_uid"]],
                "sop_class_uid": i["sop_class_uid"],
                "instance_number": i["instance_number"],
                "blob_digest": i["blob_digest"],
                "size": i["size"],
                "rows": i["rows"],
                "columns": i["columns"],
                "number_of_frames": i["number_of_frames"],
                "bits_allocated": i["bits_allocated"],
                "transfer_syntax_uid": i["transfer_syntax_uid"],
                "content_date": i["content_date"],
                "deid_options": i["deid_options"],
                "batch_id": batch_id,
                "created_at": now,
            }
            for i in items
        ],
    )


def upsert_clinical(
    session: Session, subject_id: int, data: Mapping[str, Any], batch_id: int | None
) -> None:
    """Set a subject's clinical record (the newest import wins, column by column)."""
    record = session.scalar(select(ClinicalRecord).where(ClinicalRecord.subject_id == subject_id))
    if record is None:
        session.add(ClinicalRecord(subject_id=subject_id, data=dict(data), batch_id=batch_id))
    else:
        record.data = {**record.data, **data}
        record.batch_id = batch_id
        record.updated_at = utcnow()


def blob_referenced(session: Session, digest: str) -> bool:
    """Whether any catalogued instance uses a blob."""
    return (
        session.scalar(select(Instance.id).where(Instance.blob_digest == digest).limit(1))
        is not None
    )


@dataclass(frozen=True)
class SeriesQuery:
    """Catalogue search criteria; every field is optional and they combine with AND."""

    modality: str | None = None
    body_part: str | None = None
    manufacturer: str | None = None
    subject: str | None = None
    study_date_from: str | None = None
    study_date_to: str | None = None
    limit: int = 100
    offset: int = 0


def _series_select(query: SeriesQuery) -> Select[Any]:
    stmt = (
        select(
            Series,
            Study.study_instance_uid,
            Study.study_date,
            Subject.pseudonym,
            Subject.site,
            func.count(Instance.id).label("instances"),
            func.coalesce(func.sum(Instance.size), 0).label("bytes"),
        )
        .join(Study, Series.study_id == Study.id)
        .join(Subject, Study.subject_id == Subject.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .group_by(Series.id, Study.id, Subject.id)
    )
    if query.modality:
        stmt = stmt.where(func.upper(Series.modality) == query.modality.upper())
    if query.body_part:
        stmt = stmt.where(func.upper(Series.body_part_examined) == query.body_part.upper())
    if query.manufacturer:
        stmt = stmt.where(Series.manufacturer.ilike(f"%{query.manufacturer}%"))
    if query.subject:
        stmt = stmt.where(Subject.pseudonym == query.subject)
    if query.study_date_from:
        stmt = stmt.where(Study.study_date >= query.study_date_from)
    if query.study_date_to:
        stmt = stmt.where(Study.study_date <= query.study_date_to)
    return cast("Select[Any]", stmt)


def search_series(session: Session, query: SeriesQuery) -> tuple[int, list[dict[str, Any]]]:
    """Matching series with their study, subject and instance counts, and the total."""
    base = _series_select(query)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(Subject.pseudonym, Study.study_date, Series.series_number, Series.id)
        .limit(query.limit)
        .offset(query.offset)
    ).all()
    results = []
    for series, study_uid, study_date, pseudonym, site, instances, size in rows:
        results.append(
            {
                "subject": pseudonym,
                "site": site,
                "study_instance_uid": study_uid,
                "study_date": study_date,
                "series_instance_uid": series.series_instance_uid,
                "series_number": series.series_number,
                "modality": series.modality,
                "body_part_examined": series.body_part_examined,
                "manufacturer": series.manufacturer,
                "series_description": series.series_description,
                "instances": int(instances),
                "bytes": int(size),
            }
        )
    return int(total), results


def list_subjects(session: Session, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Subjects with their study counts and clinical data."""
    rows = session.execute(
        select(Subject, func.count(Study.id))
        .outerjoin(Study, Study.subject_id == Subject.id)
        .group_by(Subject.id)
        .order_by(Subject.pseudonym)
        .limit(limit)
        .offset(offset)
    ).all()
    return [
        {
            "subject": s.pseudonym,
            "site": s.site,
            "studies": int(n),
            "clinical": s.clinical.data if s.clinical else None,
        }
        for s, n in rows
    ]


def counts(session: Session) -> dict[str, int]:
    """How many subjects, studies, series and instances are catalogued."""
    return {
        "subjects": session.scalar(select(func.count(Subject.id))) or 0,
        "studies": session.scalar(select(func.count(Study.id))) or 0,
        "series": session.scalar(select(func.count(Series.id))) or 0,
        "instances": session.scalar(select(func.count(Instance.id))) or 0,
    }


def iter_batch_instances(session: Session, batch_id: int) -> Iterator[tuple[str, str]]:
    """(SOP Instance UID, blob digest) of the instances a batch catalogued, by UID."""
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.blob_digest)
        .where(Instance.batch_id == batch_id)
        .order_by(Instance.sop_instance_uid)
        .execution_options(yield_per=10_000)
    )
    for uid, digest in rows:
        yield str(uid), str(digest)
