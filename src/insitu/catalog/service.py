"""Catalogue service functions: register de-identified instances, search. They never commit."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select, delete, func, insert, select
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


@dataclass(frozen=True)
class SelectionCriteria:
    """What a dataset is built from: catalogue fields and clinical criteria (all optional)."""

    modality: str | None = None
    body_part: str | None = None
    manufacturer: str | None = None
    study_date_from: str | None = None
    study_date_to: str | None = None
    diagnosis: str | None = None
    age_min: int | None = None
    age_max: int | None = None


def _clinical_match(data: Mapping[str, Any] | None, criteria: SelectionCriteria) -> bool:
    clinical = data or {}
    if criteria.diagnosis is not None:
        diagnosis = clinical.get("diagnosis")
        if not isinstance(diagnosis, str) or diagnosis.lower() != criteria.diagnosis.lower():
            return False
    if criteria.age_min is not None or criteria.age_max is not None:
        try:
            age = int(clinical["age"])
        except (KeyError, TypeError, ValueError):
            return False
        if criteria.age_min is not None and age < criteria.age_min:
            return False
        if criteria.age_max is not None and age > criteria.age_max:
            return False
    return True


def select_series(session: Session, criteria: SelectionCriteria) -> list[int]:
    """Ids of the series matching the criteria (clinical criteria on each subject's record)."""
    query = SeriesQuery(
        modality=criteria.modality,
        body_part=criteria.body_part,
        manufacturer=criteria.manufacturer,
        study_date_from=criteria.study_date_from,
        study_date_to=criteria.study_date_to,
    )
    matching = _series_select(query).subquery()
    rows = session.execute(
        select(matching.c.id, ClinicalRecord.data)
        .select_from(matching)
        .join(Series, Series.id == matching.c.id)
        .join(Study, Study.id == Series.study_id)
        .outerjoin(ClinicalRecord, ClinicalRecord.subject_id == Study.subject_id)
        .order_by(matching.c.id)
    ).all()
    return [int(series_id) for series_id, data in rows if _clinical_match(data, criteria)]


def series_ids_for_uids(session: Session, uids: Sequence[str]) -> dict[str, int]:
    """Catalogue ids of the given Series Instance UIDs (unknown ones are left out)."""
    found: dict[str, int] = {}
    for start in range(0, len(uids), 500):
        chunk = list(uids[start : start + 500])
        rows = session.execute(
            select(Series.series_instance_uid, Series.id).where(
                Series.series_instance_uid.in_(chunk)
            )
        ).all()
        found.update({str(uid): int(series_id) for uid, series_id in rows})
    return found


def content_of_series(session: Session, series_ids: Sequence[int]) -> Iterator[str]:
    """The content a dataset's hash covers, as sorted text lines, without reading any image:
    each instance's SOP Instance UID and blob digest, then each subject's clinical record."""
    for uid, digest in instances_of_series(session, series_ids):
        yield f"instance {uid} {digest}"
    for pseudonym, data in clinical_of_series(session, series_ids):
        yield f"clinical {pseudonym} {json.dumps(data, sort_keys=True, separators=(',', ':'))}"


def provenance_of_series(session: Session, series_ids: Sequence[int]) -> dict[str, Any]:
    """Sites and de-identification options of the instances in the series, and totals."""
    sites = session.scalars(
        select(Subject.site)
        .join(Study, Study.subject_id == Subject.id)
        .join(Series, Series.study_id == Study.id)
        .where(Series.id.in_(list(series_ids)))
        .distinct()
        .order_by(Subject.site)
    ).all()
    options = session.scalars(
        select(Instance.deid_options)
        .where(Instance.series_id.in_(list(series_ids)))
        .distinct()
        .order_by(Instance.deid_options)
    ).all()
    instances, size = session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0)).where(
            Instance.series_id.in_(list(series_ids))
        )
    ).one()
    return {
        "sites": list(sites),
        "deid_options": list(options),
        "instances": int(instances),
        "bytes": int(size),
    }


def instances_of_series(session: Session, series_ids: Sequence[int]) -> Iterator[tuple[str, str]]:
    """(SOP Instance UID, blob digest) of every instance of the series, by UID."""
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.blob_digest)
        .where(Instance.series_id.in_(list(series_ids)))
        .order_by(Instance.sop_instance_uid)
        .execution_options(yield_per=10_000)
    )
    for uid, digest in rows:
        yield str(uid), str(digest)


def statistics_of_series(session: Session, series_ids: Sequence[int]) -> dict[str, Any]:
    """Totals and breakdowns of a set of series: subjects, studies, series, instances, bytes;
    by modality, body part and manufacturer (series) and by sex, age band and diagnosis
    (subjects' clinical records)."""
    ids = list(series_ids)
    series_rows = session.execute(
        select(Series.modality, Series.body_part_examined, Series.manufacturer, Study.subject_id)
        .join(Study, Study.id == Series.study_id)
        .where(Series.id.in_(ids))
    ).all()
    studies = session.scalar(
        select(func.count(func.distinct(Series.study_id))).where(Series.id.in_(ids))
    )
    instances, size = session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0)).where(
            Instance.series_id.in_(ids)
        )
    ).one()
    subjects = {int(row[3]) for row in series_rows}
    clinical: dict[int, dict[str, Any]] = dict(
        session.execute(
            select(ClinicalRecord.subject_id, ClinicalRecord.data).where(
                ClinicalRecord.subject_id.in_(subjects)
            )
        ).all()
    )

    def tally(values: Iterator[Any]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for value in values:
            key = str(value) if value not in (None, "") else "unknown"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def age_band(subject_id: int) -> str:
        try:
            age = int((clinical.get(subject_id) or {})["age"])
        except (KeyError, TypeError, ValueError):
            return "unknown"
        low = age // 10 * 10
        return f"{low}-{low + 9}"

    return {
        "subjects": len(subjects),
        "studies": int(studies or 0),
        "series": len(series_rows),
        "instances": int(instances),
        "bytes": int(size),
        "by_modality": tally(iter(r[0] for r in series_rows)),
        "by_body_part": tally(iter(r[1] for r in series_rows)),
        "by_manufacturer": tally(iter(r[2] for r in series_rows)),
        "by_sex": tally(iter((clinical.get(s) or {}).get("sex") for s in subjects)),
        "by_age_band": tally(iter(age_band(s) for s in subjects)),
        "by_diagnosis": tally(iter((clinical.get(s) or {}).get("diagnosis") for s in subjects)),
    }


@dataclass(frozen=True)
class ViewRow:
    """One instance as a dataset view lists it: where it sits and its key attributes."""

    subject: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str | None
    body_part_examined: str | None
    manufacturer: str | None
    series_description: str | None
    study_date: str | None
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    transfer_syntax_uid: str
    size: int
    blob_digest: str


def view_rows_of_series(session: Session, series_ids: Sequence[int]) -> Iterator[ViewRow]:
    """Every instance of the series with its subject, study and series, in path order."""
    ids = list(series_ids)
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(
                Subject.pseudonym.label("subject"),
                Study.study_instance_uid,
                Series.series_instance_uid,
                Instance.sop_instance_uid,
                Instance.sop_class_uid,
                Series.modality,
                Series.body_part_examined,
                Series.manufacturer,
                Series.series_description,
                Study.study_date,
                Instance.instance_number,
                Instance.rows,
                Instance.columns,
                Instance.number_of_frames,
                Instance.transfer_syntax_uid,
                Instance.size,
                Instance.blob_digest,
            )
            .join(Series, Series.id == Instance.series_id)
            .join(Study, Study.id == Series.study_id)
            .join(Subject, Subject.id == Study.subject_id)
            .where(Instance.series_id.in_(ids[start : start + 500]))
            .execution_options(yield_per=10_000)
        )
        for row in rows:
            yield ViewRow(*cast(tuple[Any, ...], row))


def clinical_of_series(
    session: Session, series_ids: Sequence[int]
) -> list[tuple[str, dict[str, Any]]]:
    """(pseudonym, clinical record) of every subject with a record among the series."""
    rows = session.execute(
        select(Subject.pseudonym, ClinicalRecord.data)
        .join(ClinicalRecord, ClinicalRecord.subject_id == Subject.id)
        .where(
            Subject.id.in_(
                select(Study.subject_id)
                .join(Series, Series.study_id == Study.id)
                .where(Series.id.in_(list(series_ids)))
            )
        )
        .order_by(Subject.pseudonym)
    ).all()
    return [(str(pseudonym), dict(data)) for pseudonym, data in rows]


def subject_series(session: Session, pseudonym: str) -> list[int] | None:
    """Ids of a subject's series (None when no subject has this pseudonym)."""
    subject_id = session.scalar(select(Subject.id).where(Subject.pseudonym == pseudonym))
    if subject_id is None:
        return None
    return list(
        session.scalars(
            select(Series.id)
            .join(Study, Study.id == Series.study_id)
            .where(Study.subject_id == subject_id)
            .order_by(Series.id)
        )
    )


def delete_subject(session: Session, pseudonym: str) -> list[str]:
    """Remove a subject and everything catalogued of them (instances, series, studies, clinical
    record). Returns the blob digests their instances used, for the caller to collect once the
    transaction is committed. References from datasets must be gone first."""
    subject_id = session.scalar(select(Subject.id).where(Subject.pseudonym == pseudonym))
    if subject_id is None:
        return []
    study_ids = select(Study.id).where(Study.subject_id == subject_id)
    series_ids = select(Series.id).where(Series.study_id.in_(study_ids))
    digests = sorted(
        set(session.scalars(select(Instance.blob_digest).where(Instance.series_id.in_(series_ids))))
    )
    session.execute(delete(Instance).where(Instance.series_id.in_(series_ids)))
    session.execute(delete(Series).where(Series.study_id.in_(study_ids)))
    session.execute(delete(Study).where(Study.subject_id == subject_id))
    session.execute(delete(ClinicalRecord).where(ClinicalRecord.subject_id == subject_id))
    session.execute(delete(Subject).where(Subject.id == subject_id))
    return digests


@dataclass(frozen=True)
class StoredInstance:
    """A catalogued instance as the re-scrub sees it."""

    sop_instance_uid: str
    series_id: int
    blob_digest: str
    deid_options: str


def stored_instances(session: Session) -> list[StoredInstance]:
    """Every catalogued instance with its blob and de-identification record."""
    rows = session.execute(
        select(
            Instance.sop_instance_uid,
            Instance.series_id,
            Instance.blob_digest,
            Instance.deid_options,
        ).order_by(Instance.id)
    ).all()
    return [StoredInstance(str(u), int(s), str(d), str(o)) for u, s, d, o in rows]


_SERIES_FIELDS = (
    "body_part_examined",
    "manufacturer",
    "manufacturer_model_name",
    "series_description",
    "series_date",
    "series_number",
)


def replace_instance_blob(
    session: Session,
    sop_instance_uid: str,
    attributes: Mapping[str, Any],
    digest: str,
    size: int,
    deid_options: str,
) -> None:
    """A re-de-identified instance: its new blob, and the catalogue fields rewritten from it
    (a field the current rules no longer keep becomes empty: it is purged, not kept)."""
    instance = session.scalar(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid))
    if instance is None:
        raise LookupError(f"no catalogued instance {sop_instance_uid}")
    instance.blob_digest = digest
    instance.size = size
    instance.deid_options = deid_options
    instance.transfer_syntax_uid = attributes["transfer_syntax_uid"]
    instance.content_date = attributes["content_date"]
    series = instance.series
    for name in _SERIES_FIELDS:
        setattr(series, name, attributes[name])
    series.study.study_description = attributes["study_description"]
    series.study.study_date = attributes["study_date"]


def remove_instance(session: Session, sop_instance_uid: str) -> tuple[int, str] | None:
    """Take one instance out of the catalogue (it goes to the quarantine); its series id and
    blob digest, or None when it is not catalogued."""
    instance = session.scalar(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid))
    if instance is None:
        return None
    found = (instance.series_id, instance.blob_digest)
    session.delete(instance)
    return found


def site_of_subject(session: Session, pseudonym: str) -> str | None:
    """The site a subject pseudonym belongs to."""
    return session.scalar(select(Subject.site).where(Subject.pseudonym == pseudonym))
