"""Finding datasets: the explorer's list, filtered by name, modality, body part, size (number
of instances), state and tier, sorted and paginated; anonymous callers see published versions
only. Reached through ``datasets.service`` (re-exported there)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.catalog.models import Series
from insitu.datasets.models import (
    Dataset,
    DatasetGrant,
    DatasetSeries,
    DatasetState,
    DatasetSteward,
)

INSTANCES = Dataset.provenance["instances"].as_integer()
SORTS = {
    "name": (Dataset.name, Dataset.version.desc()),
    "largest": (INSTANCES.desc(), Dataset.id.desc()),
    "newest": (Dataset.created_at.desc(), Dataset.id.desc()),
    "released": (Dataset.released_at.desc(), Dataset.id.desc()),
}


@dataclass(frozen=True)
class DatasetFilter:
    """What the list shows; empty fields filter nothing."""

    text: str = ""
    modality: str = ""
    body_part: str = ""
    state: str = ""
    tier: str = ""
    sort: str = "name"
    min_instances: int | None = None
    max_instances: int | None = None


@dataclass
class DatasetRow:
    """One version in the list, with its modalities and body parts."""

    dataset: Dataset
    modalities: list[str] = field(default_factory=list)
    body_parts: list[str] = field(default_factory=list)


def _visible(user_id: int | None, session: Session) -> Select[Dataset]:
    query = select(Dataset)
    if user_id is None:
        return query.where(Dataset.state == DatasetState.published)
    projects = access.project_ids_of(session, user_id)
    granted = select(DatasetGrant.dataset_id).where(
        DatasetGrant.revoked_at.is_(None),
        (DatasetGrant.user_id == user_id) | DatasetGrant.project_id.in_(projects or {-1}),
    )
    stewarded = select(DatasetSteward.dataset_id).where(DatasetSteward.user_id == user_id)
    return query.where(
        (Dataset.state == DatasetState.published)
        | Dataset.id.in_(granted)
        | Dataset.id.in_(stewarded)
    )


def _with_series(column: Any, value: str) -> Select[int]:
    return (
        select(DatasetSeries.dataset_id)
        .join(Series, Series.id == DatasetSeries.series_id)
        .where(func.upper(column) == value.upper())
    )


def search_datasets(
    session: Session, user_id: int | None, wanted: DatasetFilter, limit: int, offset: int
) -> tuple[int, list[DatasetRow]]:
    """The total matching and one page of dataset versions the caller may see."""
    query = _visible(user_id, session)
    if wanted.text:
        pattern = f"%{wanted.text.lower()}%"
        query = query.where(
            or_(func.lower(Dataset.name).like(pattern), func.lower(Dataset.title).like(pattern))
        )
    if wanted.modality:
        query = query.where(Dataset.id.in_(_with_series(Series.modality, wanted.modality)))
    if wanted.body_part:
        query = query.where(
            Dataset.id.in_(_with_series(Series.body_part_examined, wanted.body_part))
        )
    if wanted.state:
        query = query.where(Dataset.state == DatasetState(wanted.state))
    if wanted.tier:
        query = query.where(Dataset.tier == wanted.tier)
    if wanted.min_instances is not None:
        query = query.where(wanted.min_instances <= INSTANCES)
    if wanted.max_instances is not None:
        query = query.where(wanted.max_instances >= INSTANCES)
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    order = SORTS.get(wanted.sort, SORTS["name"])
    page = list(session.scalars(query.order_by(*order).limit(limit).offset(offset)))
    return total, _rows(session, page)


def _rows(session: Session, page: Sequence[Dataset]) -> list[DatasetRow]:
    rows = {d.id: DatasetRow(d) for d in page}
    if not rows:
        return []
    found = session.execute(
        select(DatasetSeries.dataset_id, Series.modality, Series.body_part_examined)
        .join(Series, Series.id == DatasetSeries.series_id)
        .where(DatasetSeries.dataset_id.in_(list(rows)))
        .distinct()
    ).all()
    for dataset_id, modality, body_part in found:
        row = rows[dataset_id]
        if modality and modality not in row.modalities:
            row.modalities.append(modality)
        if body_part and body_part not in row.body_parts:
            row.body_parts.append(body_part)
    for row in rows.values():
        row.modalities.sort()
        row.body_parts.sort()
    return [rows[d.id] for d in page]
