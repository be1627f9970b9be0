"""Per-instance work, run in worker processes: parse, de-identify, re-encode, stage the blob.

The fast path parses the header with pydicom, stops at the pixel data, de-identifies the
header, writes it back and appends the pixel data element's original bytes: pixels are never
decoded. Files whose pixel data is not the last element, or whose dataset is deflated, take
the full pydicom path instead.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from insitu.ingest.deid import values
from insitu.ingest.deid.allowlist import AllowList
from insitu.ingest.deid.engine import DeidEngine, Rescrub, SubjectContext
from insitu.ingest.deid.ocr import OcrUnavailableError, TesseractDetector
from insitu.ingest.deid.pixels import (
    SEQUENCE_DELIMITATION_ITEM,
    PixelDataError,
    strip_encapsulated,
    strips_segments,
)
from insitu.ingest.deid.table import Options
from insitu.ingest.encoder import encode_dataset, encode_file_meta
from insitu.ingest.pseudonyms import Pseudonymizer
from insitu.storage.protocol import BlobStore, StagedBlob

IMPLEMENTATION_CLASS_UID = "2.25.240918237346532981612345896016425337893"
IMPLEMENTATION_VERSION_NAME = "INSITU_0_1"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC"})
# SOP classes whose pixels often show burned-in text: secondary capture, ultrasound,
# projection radiography and angiography (technologists' annotations, scanned requests).
_RISKY_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture family
    "1.2.840.10008.5.1.4.1.1.6.",  # Ultrasound (single and multi-frame)
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.1",  # CR, DX (for presentation and processing), MG, IO
    "1.2.840.10008.5.1.4.1.1.12.",  # XA, RF, enhanced XA/XRF
    "1.2.840.10008.5.1.4.1.1.77.",  # visible light: endoscopy, photography, microscopy
)
_RISKY_MODALITIES = frozenset(
    {"US", "SC", "OT", "XC", "ES", "GM", "SM", "DOC", "XA", "RF", "CR", "DX", "IO", "PX"}
)


class IngestFileError(ValueError):
    """A file that cannot be ingested; the message is the reason shown to the steward."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; picklable."""

    secret: bytes
    options: Options
    site: str
    store: BlobStore
    allow_list: AllowList | None = None
    """The deployment's allow-list (shipped plus extension); None: the shipped one."""
    ocr: bool = True
    """Read the pixels of risky instances whose header says Burned In Annotation NO with
    tesseract; off: such headers are trusted (INSITU_OCR=off)."""
    rescrub: Rescrub | None = None
    """Set by ``insitu ingest rescrub``: the input is an instance insitu stored before, whose
    pseudonyms, UIDs and dates stay as they are."""
    niceness: int = 0
    """Added to worker processes' nice value: the listener lowers them so that receiving
    from the network is never starved by de-identification."""


@dataclass
class Outcome:
    """The result for one input file; ``error`` set means it failed."""

    source: str
    path_hmac: str
    error: str | None = None
    staged: StagedBlob | None = None
    quarantine_reason: str | None = None
    quarantine_code: str | None = None
    """The reason's kind (``QUARANTINE_CODES``): stewards review the quarantine by it."""
    alternate_uid: str | None = None
    """The SOP Instance UID this instance would have had under the other UID choice
    (retained or remapped): a re-ingest with other options is a conflict, not a copy."""
    attributes: dict[str, Any] = field(default_factory=dict)
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)


class InstanceProcessor:
    """Holds the engine and store of one worker process."""

    def __init__(self, config: WorkerConfig) -> None:
        # Tolerant reading: a value that breaks a VR rule is still read and de-identified.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        self.config = config
        self.pseudonymizer = Pseudonymizer(config.secret)
        self.engine = DeidEngine(
            config.options, self.pseudonymizer, config.allow_list, config.rescrub
        )
        self.detector = TesseractDetector() if config.ocr else None

    def process(self, source: str, data: bytes) -> Outcome:
        """De-identify and stage one file's bytes; never raises for bad input."""
        outcome = Outcome(source=source, path_hmac=self.pseudonymizer.path(source))
        try:
            output, ds, transfer_syntax = self._deidentify(data, outcome)
        except IngestFileError as exc:
            outcome.error = str(exc)
            return outcome
        except (InvalidDicomError, EOFError, struct.error) as exc:
            outcome.error = f"not a readable DICOM file: {exc}"
            return outcome
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop a batch
            # The exception's text may quote values from the file: only its kind is kept.
            outcome.error = (
                f"unreadable DICOM ({type(exc).__name__}): a value or structure in the file "
                "could not be parsed; check the file (e.g. with dciodvfy) or re-export it"
            )
            return outcome
        outcome.attributes = catalog_attributes(ds, transfer_syntax)
        if outcome.quarantine_code is None:
            found = quarantine_reason(ds)
            if found is None and self.detector is not None and is_risky(ds):
                found = self._read_pixels(output)
            if found is not None:
                outcome.quarantine_code, outcome.quarantine_reason = found
        outcome.staged = self.config.store.stage(output)
        return outcome

    def _read_pixels(self, output: bytes) -> tuple[str, str] | None:
        """OCR on the de-identified instance's pixels; a quarantine reason or None."""
        if self.detector is None:
            return None
        try:
            full = pydicom.dcmread(io.BytesIO(output))
            finding = self.detector.find_text(full)
        except OcrUnavailableError as exc:
            return "text-check-failed", f"the burned-in text check could not run ({exc})"
        except Exception as exc:  # noqa: BLE001 - undecodable pixels are held, not passed
            return "text-check-failed", (
                f"the pixels could not be decoded for the burned-in text check "
                f"({type(exc).__name__}); review them before release"
            )
        if finding.words == 0:
            return None
        # Counts only: what the OCR read may be a name.
        return "ocr-text", (
            f"OCR found {finding.words} word(s) of text in {finding.frames_with_text} of "
            f"{finding.frames_sampled} sampled frame(s), though Burned In Annotation is NO"
        )

    def _deidentify(self, data: bytes, outcome: Outcome) -> tuple[bytes, Dataset, UID]:
        fp = io.BytesIO(data)
        ds: Dataset
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError:
            # Tolerant reading: old exports lack the preamble and file meta. Such a file is
            # accepted only if it then reads as a dataset with a SOP Class or Instance UID.
            fp.seek(0)
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            except Exception:  # noqa: BLE001 - whatever force-reading raises, it is not DICOM
                ds = Dataset()
            if 0x00080016 not in ds and 0x00080018 not in ds:
                raise IngestFileError(
                    "not a DICOM file: no DICM prefix and no SOP Class or Instance UID"
                ) from None
        header_end = fp.tell()
        transfer_syntax = _transfer_syntax(ds)
        subject = self._subject(ds)
        tail: bytes | memoryview | None = None
        if transfer_syntax != DeflatedExplicitVRLittleEndian:
            tail = _pixel_element(data, header_end, transfer_syntax)
        if tail is None:
            ds = pydicom.dcmread(io.BytesIO(data))
            tail = b""
        source_uid = _first_text(ds, _TAGS["SOPInstanceUID"])
        report = self.engine.apply(ds, subject)
        outcome.actions = report.actions
        output_uid = _first_text(ds, _TAGS["SOPInstanceUID"])
        outcome.alternate_uid = (
            source_uid if output_uid != source_uid else self.pseudonymizer.uid(source_uid)
        )
        try:
            tail = _strip_pixel_segments(ds, tail, transfer_syntax, report.actions)
        except PixelDataError as exc:
            outcome.quarantine_code = "pixels-unchecked"
            outcome.quarantine_reason = (
                f"the compressed pixel data could not be checked for text segments ({exc})"
            )
        meta = encode_file_meta(
            _first_text(ds, 0x00080016),
            _first_text(ds, 0x00080018),
            transfer_syntax,
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION_NAME,
        )
        body = encode_dataset(ds, transfer_syntax)
        if transfer_syntax == DeflatedExplicitVRLittleEndian:
            compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = compressor.compress(body) + compressor.flush()
        return b"".join((meta, body, tail)), ds, transfer_syntax

    def _subject(self, ds: Dataset) -> SubjectContext:
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            if not _first_text(ds, _TAGS[keyword]):
                raise IngestFileError(
                    f"{keyword} is missing or empty: insitu needs it to catalogue the instance; "
                    "fix the export at the source"
                )
        patient_id = _first_text(ds, _TAGS["PatientID"])
        if not patient_id:
            raise IngestFileError(
                "PatientID is missing or empty: the subject pseudonym is keyed on it; "
                "fix the export at the source"
            )
        site = self.config.site
        if self.config.rescrub is not None:
            # Stored instances carry the pseudonym and shifted dates already.
            return SubjectContext(site, patient_id, patient_id, dt.timedelta())
        return SubjectContext(
            site=site,
            original_patient_id=patient_id,
            pseudonym=self.pseudonymizer.subject(site, patient_id),
            date_shift=self.pseudonymizer.date_shift(site, patient_id),
        )


def _strip_pixel_segments(
    ds: Dataset, tail: bytes | memoryview, transfer_syntax: UID, actions: Counter[tuple[str, str]]
) -> bytes | memoryview:
    """Remove JPEG/JPEG 2000 comment and application segments from encapsulated pixel data.

    ``tail`` is the encoded pixel data element of the fast path (empty on the full path,
    where the element is in ``ds``). Returns the tail to append.
    """
    if not strips_segments(str(transfer_syntax)):
        return tail
    frames = _int(_first_text(ds, _TAGS["NumberOfFrames"])) or 1
    if len(tail) >= 12 and bytes(tail[8:12]) == b"\xff\xff\xff\xff":
        new_value = strip_encapsulated(tail[12:], str(transfer_syntax), frames)
        if new_value is None:
            return tail
        actions[("JPEG comment and application segments", "X")] += 1
        return bytes(tail[:12]) + new_value
    elem = ds.get_item(0x7FE00010)
    if elem is not None and isinstance(elem.value, bytes) and elem.value[:4] == b"\xfe\xff\x00\xe0":
        new_value = strip_encapsulated(
            elem.value + SEQUENCE_DELIMITATION_ITEM, str(transfer_syntax), frames
        )
        if new_value is not None:
            actions[("JPEG comment and application segments", "X")] += 1
            ds.PixelData = new_value[: -len(SEQUENCE_DELIMITATION_ITEM)]
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
    return tail


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if not uid and None not in ds.original_encoding:
        implicit, little = ds.original_encoding
        uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        if not little:
            uid = ExplicitVRBigEndian
    if not uid:
        raise IngestFileError(
            "the file meta information has no Transfer Syntax UID (0002,0010); "
            "re-export the file as DICOM Part 10"
        )
    uid = UID(str(uid))
    if not uid.is_transfer_syntax:
        # The value is not echoed: a sender can put anything there, and errors are stored.
        raise IngestFileError(
            "unsupported transfer syntax: (0002,0010) is not a DICOM standard transfer syntax; "
            "ask the sender to transcode (for example to Explicit VR Little Endian)"
        )
    return uid


def _pixel_element(data: bytes, offset: int, transfer_syntax: UID) -> memoryview | None:
    """The encoded pixel data element at ``offset``, or None if the slow path is needed.

    None also covers a file with no pixel data; an incomplete element raises IngestFileError.
    """
    if offset >= len(data):
        return memoryview(b"") if offset == len(data) else None
    endian = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    implicit = transfer_syntax.is_implicit_VR
    if len(data) - offset < 8:
        raise IngestFileError("truncated file: it ends inside the pixel data element header")
    group, element = struct.unpack_from(endian + "HH", data, offset)
    if (group << 16 | element) not in _PIXEL_TAGS:
        return None
    if implicit:
        (length,) = struct.unpack_from(endian + "L", data, offset + 4)
        value_start = offset + 8
    else:
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            if len(data) - offset < 12:
                raise IngestFileError("truncated file: it ends inside the pixel data header")
            (length,) = struct.unpack_from(endian + "L", data, offset + 8)
            value_start = offset + 12
        else:
            (length,) = struct.unpack_from(endian + "H", data, offset + 6)
            value_start = offset + 8
    if length == 0xFFFFFFFF:
        end = _encapsulated_end(data, value_start, endian)
    else:
        end = value_start + length
        if end > len(data):
            raise IngestFileError(
                f"truncated file: pixel data needs {length} bytes, {len(data) - value_start} "
                "present; re-export or re-send the file"
            )
    if end != len(data):
        return None  # trailing elements: let the full path decide on each of them
    return memoryview(data)[offset:end]


def _encapsulated_end(data: bytes, pos: int, endian: str) -> int:
    while True:
        if pos + 8 > len(data):
            raise IngestFileError(
                "truncated file: encapsulated pixel data ends before its sequence delimiter"
            )
        group, element, length = struct.unpack_from(endian + "HHL", data, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_DELIMITER:
            return pos
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise IngestFileError(f"malformed encapsulated pixel data: unexpected tag {tag:08X}")
        pos += length


def _first_text(ds: Dataset, tag: int) -> str:
    """The first value of a text element, read from its raw bytes when not yet converted."""
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ").split("\\")[0].strip()
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return str(value[0]).strip() if len(value) else ""
    return str(value).strip()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


_TAGS = {
    "PatientID": 0x00100020,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "SOPInstanceUID": 0x00080018,
    "SOPClassUID": 0x00080016,
    "StudyDate": 0x00080020,
    "SeriesDate": 0x00080021,
    "ContentDate": 0x00080023,
    "StudyDescription": 0x00081030,
    "SeriesDescription": 0x0008103E,
    "Modality": 0x00080060,
    "BodyPartExamined": 0x00180015,
    "Manufacturer": 0x00080070,
    "ManufacturerModelName": 0x00081090,
    "SeriesNumber": 0x00200011,
    "InstanceNumber": 0x00200013,
    "NumberOfFrames": 0x00280008,
}


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    """The first value, decoded with the instance's Specific Character Set."""
    decoded = values.decoded_values(ds, _TAGS[keyword])
    value = decoded[0].strip() if decoded else ""
    return value[:limit] if value else None


def catalog_attributes(ds: Dataset, transfer_syntax: str) -> dict[str, Any]:
    """The searchable attributes of a de-identified instance."""
    return {
        "subject_pseudonym": _first_text(ds, _TAGS["PatientID"]),
        "study_instance_uid": _first_text(ds, _TAGS["StudyInstanceUID"]),
        "series_instance_uid": _first_text(ds, _TAGS["SeriesInstanceUID"]),
        "sop_instance_uid": _first_text(ds, _TAGS["SOPInstanceUID"]),
        "sop_class_uid": _first_text(ds, _TAGS["SOPClassUID"]),
        "study_date": _text(ds, "StudyDate", 8),
        "study_description": _text(ds, "StudyDescription"),
        "modality": _text(ds, "Modality", 16),
        "body_part_examined": _text(ds, "BodyPartExamined", 16),
        "manufacturer": _text(ds, "Manufacturer"),
        "manufacturer_model_name": _text(ds, "ManufacturerModelName"),
        "series_description": _text(ds, "SeriesDescription"),
        "series_date": _text(ds, "SeriesDate", 8),
        "series_number": _int(_text(ds, "SeriesNumber")),
        "instance_number": _int(_text(ds, "InstanceNumber")),
        "content_date": _text(ds, "ContentDate", 8),
        "rows": _int(ds.get("Rows")),
        "columns": _int(ds.get("Columns")),
        "number_of_frames": _int(_text(ds, "NumberOfFrames")) or (1 if "Rows" in ds else None),
        "bits_allocated": _int(ds.get("BitsAllocated")),
        "transfer_syntax_uid": str(transfer_syntax),
    }


QUARANTINE_CODES = {
    "burned-in-yes": "the header says the pixels show text",
    "burned-in-absent": "a risky modality or SOP class without Burned In Annotation",
    "ocr-text": "the OCR found text though the header says NO",
    "text-check-failed": "the pixels could not be read for the text check",
    "pixels-unchecked": "compressed pixel data could not be checked for text segments",
}


def is_risky(ds: Dataset) -> bool:
    """Whether the modality or SOP class often carries burned-in text."""
    sop_class = _first_text(ds, _TAGS["SOPClassUID"])
    modality = _first_text(ds, _TAGS["Modality"]).upper()
    return sop_class.startswith(_RISKY_SOP_PREFIXES) or modality in _RISKY_MODALITIES


def quarantine_reason(ds: Dataset) -> tuple[str, str] | None:
    """Why the header says an instance's pixels may carry identity, as (code, reason)."""
    burned_in = _first_text(ds, 0x00280301).upper()
    if burned_in == "YES":
        return "burned-in-yes", "Burned In Annotation (0028,0301) is YES: the pixels show text"
    if burned_in == "NO" or not is_risky(ds):
        return None
    sop_class = _first_text(ds, _TAGS["SOPClassUID"])
    modality = _first_text(ds, _TAGS["Modality"]).upper()
    return "burned-in-absent", (
        f"modality {modality or '?'} / SOP class {sop_class} without Burned In Annotation: "
        "its pixels may show identifying text"
    )
