"""What a dataset view holds: the instance paths, ``manifest.csv``, ``index.json``,
``clinical.csv`` and ``README.txt``. The storage domain lays the files out on disk."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from insitu.catalog import service as catalog
from insitu.datasets.models import Dataset, DatasetState
from insitu.datasets.service import series_of
from insitu.storage import views
from insitu.storage.protocol import BlobStore

MANIFEST_COLUMNS = (
    "path",
    "subject",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "modality",
    "body_part_examined",
    "manufacturer",
    "series_description",
    "study_date",
    "instance_number",
    "rows",
    "columns",
    "number_of_frames",
    "transfer_syntax_uid",
    "size",
    "sha256",
)

README = """\
{title} ({name}, version {version})
{underline}

This folder is the dataset {name} v{version}, read-only. It is mounted at /data/{name}-v{version}
in every job and session that was given it; $INSITU_DATASETS lists the mounted datasets.

Layout
  README.txt        this text
  manifest.csv      one row per DICOM instance: its path below this folder and its key
                    attributes (subject pseudonym, study, series and SOP Instance UIDs,
                    modality, body part, manufacturer, size, SHA-256)
  index.json        the same rows as JSON, with the dataset's name, version and content hash
  clinical.csv      the clinical data, one row per subject, keyed by the subject pseudonym
  <subject>/<study>/<series>/<instance>.dcm
                    the de-identified DICOM files; folder and file names are the subject
                    pseudonym and the Study, Series and SOP Instance UIDs

Rules
  - Nothing here can be changed: write to $HOME, /scratch or /results.
  - Only files you put in /results can leave, and only through a reviewed release request.
  - Dates are shifted per subject, consistently between images and clinical data.

Content hash (SHA-256 over the sorted instance digests and clinical rows): {content_hash}
Subjects: {subjects}   Instances: {instances}
"""


def view_name(dataset: Dataset) -> str:
    """The view's folder name, also its mount point below /data."""
    return f"{dataset.name}-v{dataset.version}"


def ensure_view(
    session: Session,
    store: BlobStore,
    root: Path,
    dataset: Dataset,
    on_progress: Callable[[int], None] | None = None,
    sample: int | None = None,
) -> Path:
    """The view of a released version, built on first call. ``sample``: a smaller view of
    the first N subjects (by pseudonym), for smoke runs; its own folder, same layout."""
    if dataset.state not in (DatasetState.released, DatasetState.published):
        raise views.ViewError(
            f"{dataset.name} v{dataset.version} is {dataset.state.value}: only released "
            "versions have a view"
        )
    if dataset.corrupted:
        raise views.ViewError(
            f"{dataset.name} v{dataset.version} failed its integrity check (corrupted): it has "
            "no view; see `insitu dataset verify`"
        )
    folder_name = view_name(dataset) + (f"-sample{sample}" if sample else "")
    existing = views.view_path(root, folder_name)
    if existing.is_dir():
        return existing
    series_ids = series_of(session, dataset)
    rows = sorted(
        catalog.view_rows_of_series(session, series_ids),
        key=lambda r: (r.subject, r.study_instance_uid, r.series_instance_uid, r.sop_instance_uid),
    )
    clinical = catalog.clinical_of_series(session, series_ids)
    if sample:
        kept = set(sorted({r.subject for r in rows})[:sample])
        rows = [r for r in rows if r.subject in kept]
        clinical = [(p, data) for p, data in clinical if p in kept]
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    files: list[tuple[str, str]] = []
    index_rows: list[dict[str, object]] = []
    for row in rows:
        path = (
            f"{row.subject}/{row.study_instance_uid}/{row.series_instance_uid}/"
            f"{row.sop_instance_uid}.dcm"
        )
        files.append((path, row.blob_digest))
        values = (
            path,
            row.subject,
            row.study_instance_uid,
            row.series_instance_uid,
            row.sop_instance_uid,
            row.sop_class_uid,
            row.modality,
            row.body_part_examined,
            row.manufacturer,
            row.series_description,
            row.study_date,
            row.instance_number,
            row.rows,
            row.columns,
            row.number_of_frames,
            row.transfer_syntax_uid,
            row.size,
            row.blob_digest,
        )
        writer.writerow(values)  # csv writes None as an empty field
        index_rows.append(dict(zip(MANIFEST_COLUMNS, values, strict=True)))
    columns = sorted({key for _, data in clinical for key in data})
    clinical_csv = io.StringIO()
    clinical_writer = csv.writer(clinical_csv, lineterminator="\n")
    clinical_writer.writerow(["subject", *columns])
    for pseudonym, data in clinical:
        clinical_writer.writerow(
            [pseudonym, *("" if data.get(c) is None else data[c] for c in columns)]
        )
    index = {
        "name": dataset.name,
        "version": dataset.version,
        "content_sha256": dataset.content_hash,
        "instances": index_rows,
    }
    title = dataset.title
    readme = README.format(
        title=title,
        name=dataset.name,
        version=dataset.version,
        underline="=" * len(f"{title} ({dataset.name}, version {dataset.version})"),
        content_hash=dataset.content_hash,
        subjects=len({r.subject for r in rows}),
        instances=len(rows),
    )
    documents = {
        "README.txt": readme.encode(),
        "manifest.csv": manifest.getvalue().encode(),
        # Compact: the C encoder (an indented dump of 100,000 rows takes seconds).
        "index.json": json.dumps(index, separators=(",", ":")).encode(),
        "clinical.csv": clinical_csv.getvalue().encode(),
    }
    return views.build_view(store, root, folder_name, files, documents, on_progress)


def remove_view(root: Path, dataset: Dataset) -> bool:
    """Remove a version's view and its smoke-run samples (it was invalidated, or a subject
    withdrew: their hard links would keep the bytes); whether there was one."""
    name = view_name(dataset)
    samples = [p.name for p in root.glob(f"{name}-sample*")] if root.is_dir() else []
    removed = [views.remove_view(root, n) for n in (name, *samples)]
    return any(removed)
