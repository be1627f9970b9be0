"""Viewing service: which studies, series and instances a user may see (those of datasets
they may use), search over them (QIDO-RS), and rendered frames under the frame budget, each
first opening of a series in an hour written to the ledger. Functions never commit.

No function here returns DICOM or pixel values: only catalogue attributes and JPEG renders.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from insitu.access.ratelimit import SlidingWindowLimiter
from insitu.catalog.models import Instance, Series, Study, Subject
from insitu.datasets import service as datasets
from insitu.db import utcnow
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.storage.protocol import BlobStore
from insitu.web import imaging
from insitu.web.models import SeriesOpening

SERIES_OPENED = events.register(
    "dataset.viewed", "a user opened a series of the dataset in the viewer (a use of it)"
)


class ViewerError(ValueError):
    """A viewing request that cannot be served, with the reason."""


class NotUsableError(ViewerError):
    """Not in any dataset the caller may use (or no such object: the same answer)."""


class BudgetExceededError(ViewerError):
    """The caller's frames for this hour are used up."""


@dataclass(frozen=True)
class Scope:
    """The dataset versions a user may use now, and their series as a query."""

    user_id: int
    dataset_ids: tuple[int, ...]

    @property
    def series_ids(self) -> Select[int]:
        """The catalogue series of those datasets."""
        return datasets.series_ids_of(self.dataset_ids)


class ScopeCache:
    """Scopes remembered for a few seconds (one per app): working them out costs a handful
    of queries per dataset, and a viewer asks for frames many times a second. A revoked grant
    or an invalidated dataset stops rendering within ``ttl_s``."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._scopes: dict[int, tuple[float, Scope]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, user_id: int) -> Scope:
        """The user's scope, from the cache while it is fresh."""
        now = time.monotonic()
        with self._lock:
            cached = self._scopes.get(user_id)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        scope = scope_of(session, user_id)
        with self._lock:
            if len(self._scopes) > 10_000:
                self._scopes.clear()
            self._scopes[user_id] = (now, scope)
        return scope


def scope_of(session: Session, user_id: int) -> Scope:
    """What ``user_id`` may view, worked out now."""
    return Scope(user_id, tuple(d.id for d in datasets.usable_datasets(session, user_id)))


def _date_clause(column: Any, value: str) -> Any:
    low, dash, high = value.partition("-")
    if not dash:
        return column == value
    clauses = []
    if low:
        clauses.append(column >= low)
    if high:
        clauses.append(column <= high)
    return clauses[0] if len(clauses) == 1 else clauses[0] & clauses[1]


def search_studies(
    session: Session, scope: Scope, filters: dict[str, str], limit: int, offset: int
) -> list[dict[str, Any]]:
    """Studies with at least one usable series, as plain attributes."""
    usable = select(Series.study_id).where(Series.id.in_(scope.series_ids))
    query = (
        select(Study, Subject.pseudonym)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Study.id.in_(usable))
    )
    if "StudyInstanceUID" in filters:
        query = query.where(Study.study_instance_uid.in_(filters["StudyInstanceUID"].split(",")))
    if "PatientID" in filters:
        query = query.where(Subject.pseudonym == filters["PatientID"])
    if "StudyDate" in filters:
        query = query.where(_date_clause(Study.study_date, filters["StudyDate"]))
    if "ModalitiesInStudy" in filters:
        with_modality = select(Series.study_id).where(
            Series.modality == filters["ModalitiesInStudy"], Series.id.in_(scope.series_ids)
        )
        query = query.where(Study.id.in_(with_modality))
    rows = session.execute(query.order_by(Study.id).limit(limit).offset(offset)).all()
    found = []
    for study, pseudonym in rows:
        series = session.execute(
            select(Series.modality, func.count(Instance.id))
            .join(Instance, Instance.series_id == Series.id, isouter=True)
            .where(Series.study_id == study.id, Series.id.in_(scope.series_ids))
            .group_by(Series.id, Series.modality)
        ).all()
        found.append(
            {
                "StudyInstanceUID": study.study_instance_uid,
                "PatientID": pseudonym,
                "StudyDate": study.study_date,
                "StudyDescription": study.study_description,
                "ModalitiesInStudy": sorted({m for m, _ in series if m}),
                "NumberOfStudyRelatedSeries": len(series),
                "NumberOfStudyRelatedInstances": sum(n for _, n in series),
            }
        )
    return found


def _study(session: Session, study_uid: str) -> Study:
    study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).first()
    if study is None:
        raise NotUsableError(f"no study {study_uid} in the datasets you may use")
    return study


def search_series(
    session: Session, scope: Scope, study_uid: str, filters: dict[str, str]
) -> list[dict[str, Any]]:
    """The usable series of a study."""
    study = _study(session, study_uid)
    query = select(Series).where(Series.study_id == study.id, Series.id.in_(scope.series_ids))
    if "Modality" in filters:
        query = query.where(Series.modality == filters["Modality"])
    if "SeriesInstanceUID" in filters:
        query = query.where(Series.series_instance_uid == filters["SeriesInstanceUID"])
    found = []
    for series in session.scalars(query.order_by(Series.series_number, Series.id)):
        count = session.scalar(select(func.count()).where(Instance.series_id == series.id))
        found.append(
            {
                "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series.series_instance_uid,
                "Modality": series.modality,
                "SeriesDescription": series.series_description,
                "BodyPartExamined": series.body_part_examined,
                "SeriesNumber": series.series_number,
                "NumberOfSeriesRelatedInstances": int(count or 0),
            }
        )
    if not found and "Modality" not in filters and "SeriesInstanceUID" not in filters:
        raise NotUsableError(f"no study {study_uid} in the datasets you may use")
    return found


def _series(session: Session, scope: Scope, study_uid: str, series_uid: str) -> Series:
    series = session.scalars(
        select(Series)
        .join(Study, Study.id == Series.study_id)
        .where(
            Series.series_instance_uid == series_uid,
            Study.study_instance_uid == study_uid,
            Series.id.in_(scope.series_ids),
        )
    ).first()
    if series is None:
        raise NotUsableError(f"no series {series_uid} in the datasets you may use")
    return series


def search_instances(
    session: Session, scope: Scope, study_uid: str, series_uid: str
) -> list[dict[str, Any]]:
    """The instances of a usable series, in instance number order."""
    series = _series(session, scope, study_uid, series_uid)
    return [
        {
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "SOPClassUID": i.sop_class_uid,
            "SOPInstanceUID": i.sop_instance_uid,
            "InstanceNumber": i.instance_number,
            "Rows": i.rows,
            "Columns": i.columns,
            "NumberOfFrames": i.number_of_frames,
        }
        for i in _instances(session, series)
    ]


def first_instance(session: Session, scope: Scope, study_uid: str, series_uid: str) -> str:
    """The SOP Instance UID of a usable series' first instance ('' if none)."""
    series = _series(session, scope, study_uid, series_uid)
    instances = _instances(session, series)
    return instances[0].sop_instance_uid if instances else ""


def _instances(session: Session, series: Series) -> Sequence[Instance]:
    return session.scalars(
        select(Instance)
        .where(Instance.series_id == series.id)
        .order_by(Instance.instance_number, Instance.id)
    ).all()


def _hour() -> str:
    return utcnow().strftime("%Y-%m-%dT%H")


def spend_frame(budget: SlidingWindowLimiter, user_id: int) -> int:
    """Count one frame against the user's budget (a sliding hour); the frames left."""
    wait = budget.retry_after(str(user_id))
    if wait is not None:
        raise BudgetExceededError(
            f"you have used your {budget.limit:,} frames for this hour; more in "
            f"{int(wait // 60) + 1} minutes"
        )
    return budget.remaining(str(user_id))


def _opened(
    session: Session, scope: Scope, series: Series, seen: set[tuple[int, int, str]]
) -> None:
    hour = _hour()
    if (scope.user_id, series.id, hour) in seen:  # known from a committed opening
        return
    found = session.scalar(
        select(SeriesOpening.id).where(
            SeriesOpening.user_id == scope.user_id,
            SeriesOpening.series_id == series.id,
            SeriesOpening.hour == hour,
        )
    )
    if found is not None:
        if len(seen) > 100_000:
            seen.clear()
        seen.add((scope.user_id, series.id, hour))
        return
    session.add(SeriesOpening(user_id=scope.user_id, series_id=series.id, hour=hour))
    for dataset in (datasets.get_dataset_by_id(session, i) for i in scope.dataset_ids):
        if series.id in set(datasets.series_of(session, dataset)):
            ledger.record(
                session,
                SERIES_OPENED,
                actor=ledger.user_actor(scope.user_id),
                subject=datasets.subject_of(dataset),
                payload={"modality": series.modality or ""},
            )


def _target(
    session: Session, scope: Scope, study_uid: str, series_uid: str, sop_uid: str | None
) -> tuple[Series, Instance]:
    if sop_uid is None:
        series = _series(session, scope, study_uid, series_uid)
        instances = _instances(session, series)
        if not instances:
            raise NotUsableError(f"series {series_uid} holds no instance")
        return series, instances[len(instances) // 2]
    row = session.execute(  # one query: the path of UIDs, within the user's scope
        select(Series, Instance)
        .join(Study, Study.id == Series.study_id)
        .join(Instance, Instance.series_id == Series.id)
        .where(
            Study.study_instance_uid == study_uid,
            Series.series_instance_uid == series_uid,
            Instance.sop_instance_uid == sop_uid,
            Series.id.in_(scope.series_ids),
        )
    ).first()
    if row is None:
        raise NotUsableError(f"no instance {sop_uid} in the datasets you may use")
    return row[0], row[1]


class FrameCache:
    """Prepared frames (decoded, with the pattern, in modality units) of the last instances
    viewed, one per app: scrolling and windowing re-render the same frames many times."""

    def __init__(self, entries: int = 128) -> None:
        self.entries = entries
        self._frames: OrderedDict[tuple[str, int], imaging.Prepared] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: BlobStore, key: bytes, digest: str, frame: int) -> imaging.Prepared:
        """The prepared frame, decoded on a miss."""
        with self._lock:
            prepared = self._frames.get((digest, frame))
            if prepared is not None:
                self._frames.move_to_end((digest, frame))
                return prepared
        dataset = pydicom.dcmread(io.BytesIO(store.get(digest)))
        prepared = imaging.prepare(dataset, key=key, digest=digest, frame=frame)
        with self._lock:
            self._frames[(digest, frame)] = prepared
            while len(self._frames) > self.entries:
                self._frames.popitem(last=False)
        return prepared


@dataclass(frozen=True)
class Frame:
    """A rendered frame and the budget left."""

    jpeg: bytes
    frames_left: int


@dataclass(frozen=True)
class Viewing:
    """What rendering needs from the app: the store, the secret, the budget, the cache."""

    store: BlobStore
    key: bytes
    budget: SlidingWindowLimiter
    frames: FrameCache
    opened: set[tuple[int, int, str]] = field(default_factory=set)
    """(user, series, hour) openings known to be on the ledger already."""


def rendered(
    session: Session,
    viewing: Viewing,
    scope: Scope,
    uids: tuple[str, str, str | None],
    *,
    frame: int = 0,
    window: imaging.Window | None = None,
    preset: str | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int = imaging.DEFAULT_QUALITY,
    thumbnail: bool = False,
) -> Frame:
    """A rendered frame (or a thumbnail) of a usable instance; ``uids`` are the study, series
    and instance UIDs (no instance: the series' middle one)."""
    series, instance = _target(session, scope, *uids)
    if preset is not None and preset not in imaging.PRESETS:  # before a frame is spent
        raise imaging.RenderError(
            f"unknown preset {preset!r}: use one of {', '.join(imaging.PRESETS)}"
        )
    left = spend_frame(viewing.budget, scope.user_id)
    if not thumbnail:
        _opened(session, scope, series, viewing.opened)
    if thumbnail:
        frames = instance.number_of_frames or 1
        prepared = viewing.frames.get(viewing.store, viewing.key, instance.blob_digest,
                                      frames // 2)  # fmt: skip
        return Frame(imaging.thumbnail(prepared).jpeg, left)
    prepared = viewing.frames.get(viewing.store, viewing.key, instance.blob_digest, frame)
    picture = imaging.render_prepared(prepared, window=window, preset=preset,
                                      viewport=viewport, quality=quality)  # fmt: skip
    return Frame(picture.jpeg, left)


BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def _element_json(element: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "tag": f"({element.tag.group:04X},{element.tag.element:04X})",
        "keyword": element.keyword or "",
        "vr": element.VR,
    }
    if element.VR == "SQ":
        entry["items"] = [[_element_json(e) for e in item] for item in element.value]
    elif element.VR in BINARY_VRS or element.keyword == "PixelData":
        raw = element.value if isinstance(element.value, bytes) else b""
        entry["length"] = len(raw)
        entry["sha256"] = hashlib.sha256(raw).hexdigest()  # never the bytes themselves
    else:
        entry["value"] = str(element.value)[:1024]
    return entry


def _matches(entry: dict[str, Any], needle: str) -> bool:
    text = " ".join(str(entry.get(k, "")) for k in ("tag", "keyword", "vr", "value")).lower()
    return needle in text or any(_matches(e, needle) for item in entry.get("items", [])
                                 for e in item)  # fmt: skip


def header_tree(
    session: Session, store: BlobStore, scope: Scope, uids: tuple[str, str, str],
    search: str = "",
) -> list[dict[str, Any]]:  # fmt: skip
    """An instance's full de-identified header as a tree (sequences hold items of elements);
    binary elements, pixel data included, show only their length and SHA-256. With
    ``search``, the elements (and the sequences holding them) that mention it."""
    _, instance = _target(session, scope, *uids)
    dataset = pydicom.dcmread(io.BytesIO(store.get(instance.blob_digest)))
    tree = [_element_json(e) for e in dataset]
    if search:
        needle = search.lower()
        tree = [e for e in tree if _matches(e, needle)]
    return tree
