"""Pixel fingerprints of stored instances: the hash of each decoded frame (stored values,
little endian, as :func:`insitu.releases.arrays.frame_digest` computes it), the frame size
and the value range. Computed once per blob, the first time results of a job on it are
checked, and kept (blobs never change)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.releases.arrays import frame_digest
from insitu.releases.checks import ImageKind
from insitu.releases.models import PixelFingerprint
from insitu.storage.protocol import BlobNotFoundError, BlobStore


def _empty(digest: str) -> PixelFingerprint:
    return PixelFingerprint(blob_digest=digest, rows=0, columns=0, frame_sha256=[],
                            stored_min=0.0, stored_max=0.0, modality_min=0.0,
                            modality_max=0.0)  # fmt: skip


def _fingerprint(digest: str, data: bytes) -> PixelFingerprint:
    dataset = pydicom.dcmread(io.BytesIO(data))
    row = _empty(digest)
    if "PixelData" not in dataset:
        return row
    pixels: np.ndarray[Any, Any] = dataset.pixel_array
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames == 1:
        pixels = pixels[np.newaxis, ...]
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    low, high = float(pixels.min()), float(pixels.max())
    row.rows, row.columns = int(dataset.Rows), int(dataset.Columns)
    row.frame_sha256 = [frame_digest(frame) for frame in pixels]
    row.stored_min, row.stored_max = low, high
    ends = sorted((low * slope + intercept, high * slope + intercept))
    row.modality_min, row.modality_max = ends
    return row


def ensure_fingerprints(session: Session, store: BlobStore, digests: Iterable[str]) -> int:
    """Fingerprint the blobs that have none yet; returns how many were made. A blob that
    cannot be decoded gets an empty fingerprint (its bytes are still compared whole)."""
    wanted = sorted(set(digests))
    known: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        known.update(
            session.scalars(
                select(PixelFingerprint.blob_digest).where(PixelFingerprint.blob_digest.in_(chunk))
            )
        )
    made = 0
    for digest in wanted:
        if digest in known:
            continue
        try:
            data = store.get(digest)
        except BlobNotFoundError:  # gone (a withdrawal in flight): nothing to compare with
            continue
        try:
            row = _fingerprint(digest, data)
        except Exception:  # noqa: BLE001 - an undecodable image: compared by its bytes only
            row = _empty(digest)
        session.add(row)
        made += 1
    session.flush()
    return made


def fingerprints_of(
    session: Session, digests: Iterable[str]
) -> tuple[frozenset[str], tuple[ImageKind, ...]]:
    """The frame hashes of the blobs, and their frame sizes with value ranges."""
    wanted = sorted(set(digests))
    frame_hashes: set[str] = set()
    kinds: dict[tuple[int, int], list[float]] = {}
    for start in range(0, len(wanted), 500):
        rows = session.scalars(
            select(PixelFingerprint).where(
                PixelFingerprint.blob_digest.in_(wanted[start : start + 500])
            )
        )
        for row in rows:
            frame_hashes.update(row.frame_sha256)
            if not row.rows:
                continue
            ranges = kinds.setdefault((row.rows, row.columns), [row.stored_min, row.stored_max,
                                      row.modality_min, row.modality_max])  # fmt: skip
            ranges[0], ranges[1] = min(ranges[0], row.stored_min), max(ranges[1], row.stored_max)
            ranges[2] = min(ranges[2], row.modality_min)
            ranges[3] = max(ranges[3], row.modality_max)
    return frozenset(frame_hashes), tuple(
        ImageKind(size[0], size[1], *ranges) for size, ranges in sorted(kinds.items())
    )
