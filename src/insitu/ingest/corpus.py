"""A synthetic test corpus: CT and MR series (16-bit) whose headers carry realistic PHI.

PHI sits where real exports put it: top-level patient and study attributes, nested sequences,
private tags under unknown creators (including a private sequence), and folder names. Every
PHI string used is returned, so tests can prove that none survives ingest.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
_FIRST = ["JANE", "JOHN", "MARIA", "PIETER", "AMELIE", "SVEN", "LUCIA", "TARIK", "INES", "OSKAR"]
_LAST = ["DOE", "SMITH", "GARCIA", "JANSSEN", "MARTIN", "LARSSON", "ROSSI", "KAYA", "SILVA"]


@dataclass
class CorpusPatient:
    """One synthetic patient and the PHI strings their files carry."""

    patient_id: str
    name: str
    birth_date: str
    study_date: str
    phi: set[str] = field(default_factory=set)


@dataclass
class Corpus:
    """What was written."""

    root: Path
    files: list[Path]
    patients: list[CorpusPatient]
    original_uids: set[str]

    @property
    def phi_strings(self) -> set[str]:
        """Every identifying string in the corpus (names, IDs, dates, UIDs, places)."""
        found: set[str] = set(self.original_uids)
        for patient in self.patients:
            found |= patient.phi
        return found


def _patient(index: int, rng: random.Random) -> CorpusPatient:
    first = _FIRST[index % len(_FIRST)]
    last = _LAST[(index * 7) % len(_LAST)]
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 60 * 365))
    study = dt.date(2019, 1, 1) + dt.timedelta(days=rng.randrange(0, 5 * 365))
    patient = CorpusPatient(
        patient_id=f"MRN{4_700_000 + index * 37:08d}",
        name=f"{last}^{first}^Q",
        birth_date=birth.strftime("%Y%m%d"),
        study_date=study.strftime("%Y%m%d"),
    )
    patient.phi |= {
        patient.patient_id,
        patient.name,
        f"{last}^{first}",
        patient.birth_date,
        patient.study_date,
        f"{index + 12} Harbour Street, Leith",
        f"+44 131 555 {1000 + index:04d}",
        f"ACC{900_000 + index}",
        f"OLD-{patient.patient_id}",
        f"NHS{7_000_000_000 + index}",
    }
    return patient


def _header(
    patient: CorpusPatient,
    index: int,
    modality: str,
    sop_class: str,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    series_number: int,
    instance_number: int,
    rows: int,
    columns: int,
) -> Dataset:
    last, first = patient.name.split("^")[:2]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = patient.study_date
    ds.SeriesDate = patient.study_date
    ds.ContentDate = patient.study_date
    ds.StudyTime = "101502"
    ds.AccessionNumber = f"ACC{900_000 + index}"
    ds.Modality = modality
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "St. Example Royal Infirmary"
    ds.InstitutionAddress = f"{index + 12} Harbour Street, Leith"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StationName = "CT-LEITH-01"
    ds.StudyDescription = f"CHEST CT for {last}"
    ds.SeriesDescription = "AX T1 POST" if modality == "MR" else "CHEST 5MM"
    ds.OperatorsName = "TECH^TINA"
    ds.ManufacturerModelName = "MAGNETOM Skyra" if modality == "MR" else "SOMATOM Definition AS"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "F" if index % 2 else "M"
    ds.PatientAge = "061Y"
    ds.PatientAddress = f"{index + 12} Harbour Street, Leith"
    ds.PatientTelephoneNumbers = f"+44 131 555 {1000 + index:04d}"
    ds.OtherPatientIDs = f"OLD-{patient.patient_id}"
    other = Dataset()
    other.PatientID = f"NHS{7_000_000_000 + index}"
    other.IssuerOfPatientID = "NHS"
    ds.OtherPatientIDsSequence = Sequence([other])
    request = Dataset()
    request.RequestedProcedureID = f"ACC{900_000 + index}"
    request.ScheduledProcedureStepID = "SPS1"
    physician = Dataset()
    physician.PersonName = f"{last}^{first}"
    request.RequestingPhysicianIdentificationSequence = Sequence([physician])
    ds.RequestAttributesSequence = Sequence([request])
    ds.BodyPartExamined = "CHEST" if modality == "CT" else "BRAIN"
    ds.SliceThickness = "5"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.StudyID = f"S{index}"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0, 0, instance_number * 5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
    # An unknown private creator with PHI, and a private sequence holding a name.
    block = ds.private_block(0x0029, "ACME HOSPITAL PACS 1.0", create=True)
    block.add_new(0x01, "LO", f"{last}^{first}")
    block.add_new(0x02, "LO", patient.patient_id)
    inner = Dataset()
    inner.add_new(0x00100010, "PN", patient.name)
    block.add_new(0x03, "SQ", Sequence([inner]))
    return ds


def _write(ds: Dataset, pixels: bytes, path: Path) -> None:
    ds.PixelData = pixels
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "LEITH_PACS"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _pixels(rng: np.random.Generator, rows: int, columns: int) -> Iterator[bytes]:
    base = rng.integers(0, 1200, size=(rows, columns), dtype=np.int16)
    while True:
        noise = rng.integers(-40, 40, size=(rows, columns), dtype=np.int16)
        yield (base + noise).tobytes()


def generate_corpus(
    root: Path,
    subjects: int = 2,
    ct_slices: int = 4,
    mr_slices: int = 2,
    rows: int = 512,
    columns: int = 512,
    ultrasound: bool = False,
    seed: int = 7,
) -> Corpus:
    """Write a corpus under ``root``: one folder per patient, named after the patient."""
    rng = random.Random(seed)  # noqa: S311 - synthetic test data, not security
    pixel_rng = np.random.default_rng(seed)
    pixel_source = _pixels(pixel_rng, rows, columns)
    files: list[Path] = []
    patients: list[CorpusPatient] = []
    uids: set[str] = set()
    for index in range(subjects):
        patient = _patient(index, rng)
        patients.append(patient)
        folder = root / f"{patient.name.replace('^', '_')}_{patient.patient_id}"
        study_uid = generate_uid()
        uids.add(study_uid)
        series_specs = [("CT", CT_IMAGE_STORAGE, ct_slices), ("MR", MR_IMAGE_STORAGE, mr_slices)]
        for number, (modality, sop_class, count) in enumerate(series_specs, start=1):
            if count == 0:
                continue
            series_uid = generate_uid()
            frame_uid = generate_uid()
            uids |= {series_uid, frame_uid}
            for instance in range(1, count + 1):
                ds = _header(
                    patient,
                    index,
                    modality,
                    sop_class,
                    study_uid,
                    series_uid,
                    frame_uid,
                    number,
                    instance,
                    rows,
                    columns,
                )
                uids.add(ds.SOPInstanceUID)
                path = folder / f"{modality}{number}" / f"{patient.patient_id}_{instance:04d}.dcm"
                _write(ds, next(pixel_source), path)
                files.append(path)
        if ultrasound:
            ds = _header(
                patient,
                index,
                "US",
                US_IMAGE_STORAGE,
                study_uid,
                generate_uid(),
                generate_uid(),
                9,
                1,
                64,
                64,
            )
            del ds.BurnedInAnnotation
            uids |= {ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID}
            path = folder / "US9" / f"{patient.patient_id}_us.dcm"
            _write(ds, bytes(64 * 64 * 2), path)
            files.append(path)
    return Corpus(root=root, files=files, patients=patients, original_uids=uids)


def write_clinical(corpus: Corpus, path: Path) -> Path:
    """A clinical CSV for the corpus's patients, with columns to keep and to drop."""
    lines = ["patient_id,name,sex,age,diagnosis,diagnosis_date,stage,phone"]
    for index, patient in enumerate(corpus.patients):
        lines.append(
            f"{patient.patient_id},{patient.name},{'F' if index % 2 else 'M'},{55 + index},"
            f"adenocarcinoma,{patient.study_date[:4]}-{patient.study_date[4:6]}-"
            f"{patient.study_date[6:]},II,+44 131 555 {1000 + index:04d}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


CLINICAL_MAPPING_TOML = """\
key = "patient_id"

[columns]
sex = { column = "sex", values = ["F", "M", "O"] }
age = { column = "age", type = "int" }
diagnosis = { column = "diagnosis", values = [
    "adenocarcinoma", "squamous cell carcinoma", "small cell carcinoma", "benign",
] }
diagnosis_date = { column = "diagnosis_date", type = "date" }
stage = { column = "stage", values = ["0", "I", "II", "III", "IV"] }
"""
