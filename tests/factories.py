"""Test data factories: accounts with tokens, small DICOM files with chosen attributes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.models import Role
from insitu.core.platform import Platform
from insitu.db import session_scope


def make_user(session: Session, name: str, role: Role | str) -> str:
    """Create a user and return a fresh token."""
    user = access.create_user(session, name, role)
    return access.issue_token(session, user)


def user_token(platform: Platform, name: str, role: Role | str) -> str:
    with session_scope(platform.sessions) as session:
        return make_user(session, name, role)


def minimal_dataset(**attributes: Any) -> Dataset:
    """A CT-like header with the identifiers insitu requires, plus ``attributes``."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PID-FACTORY-1"
    ds.PatientName = "FACTORY^PATIENT"
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def encode(
    ds: Dataset, transfer_syntax: str = str(ExplicitVRLittleEndian), pixels: bytes | None = None
) -> bytes:
    """Part 10 bytes of a dataset."""
    if pixels is not None:
        ds.Rows, ds.Columns = 8, len(pixels) // 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = pixels
        ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    buffer = io.BytesIO()
    if UID(transfer_syntax).is_transfer_syntax:
        ds.save_as(buffer, enforce_file_format=True)
    else:  # a private syntax: pydicom needs to be told the encoding
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
