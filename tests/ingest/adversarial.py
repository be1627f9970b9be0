"""A corpus of planted identifiers, one family per class of leak, for deny-by-default tests.

Every planted value carries a marker (``QZ<class>``, a hospital UID root, a URL host, a
number) that must not be found in any byte of INSITU_HOME after ingest.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom.config
from PIL import Image
from pydicom._dicom_dict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from insitu.ingest.deid.allowlist import shipped_allow_list
from insitu.ingest.deid.table import load_table
from tests.factories import encode, minimal_dataset, write

HOSPITAL_ROOT = "1.2.826.0.1.3680043.9.9999"
URL_HOST = "qz6.example"
NUMBER_MARK = "73190461"
UL_MARK = b"QZAK"  # the bytes of a planted UL/SL value
PATIENT_ID = "QZPID-0001"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
# Never planted: the reader needs them, the catalogue keys on them, or our code writes them.
_RESERVED = frozenset(
    {0x00080005, 0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00100020, 0x00100010}
    | {0x00120062, 0x00120063, 0x00120064, 0x00280303}  # written by insitu after the walk
)


@dataclass
class Planted:
    """What a corpus planted: byte markers to search for, and the files written."""

    markers: set[bytes] = field(default_factory=set)
    files: list[Path] = field(default_factory=list)

    def add(self, path: Path, data: bytes, *markers: bytes) -> None:
        write(path, data)
        self.files.append(path)
        self.markers.update(markers)


def _table_tags() -> set[int]:
    tags = set()
    for row in load_table():
        if len(row.id) == 8 and "x" not in row.id:
            tags.add(int(row.id, 16))
    return tags


def outside_table(vr: str, limit: int = 2000) -> Iterator[tuple[int, str]]:
    """Dictionary attributes with this VR that neither the table nor the allow-list names."""
    table = _table_tags()
    allowed = shipped_allow_list().attributes
    count = 0
    for tag, (entry_vr, _vm, _name, _retired, keyword) in sorted(DicomDictionary.items()):
        group = tag >> 16
        if entry_vr != vr or group in (0x0000, 0x0002, 0xFFFE, 0x7FE0) or group & 1:
            continue
        if tag in table or tag in allowed or tag in _RESERVED or group >> 8 in (0x50, 0x60):
            continue
        yield tag, keyword
        count += 1
        if count >= limit:
            return


def _plant_unlisted(ds: Dataset, where: str) -> None:
    """Class 1, 5, 6: every unlisted CS, UR, UI, AS, OB, UL and DS attribute, planted."""
    for index, (tag, _kw) in enumerate(outside_table("CS")):
        ds.add_new(tag, "CS", f"QZ1C{where}{index:04d}")
    for index, (tag, _kw) in enumerate(outside_table("UR")):
        ds.add_new(tag, "UR", f"http://{URL_HOST}/{where}/{index}")
    for index, (tag, _kw) in enumerate(outside_table("UI", 40)):
        ds.add_new(tag, "UI", f"{HOSPITAL_ROOT}.{1 if where == 'N' else 2}.{index}")
    for tag, _kw in outside_table("AS", 20):
        ds.add_new(tag, "AS", "QZAS")
    for tag, _kw in outside_table("OB", 20):
        ds.add_new(tag, "OB", b"QZ1BQZ1B")
    for tag, _kw in outside_table("UL", 40):
        ds.add_new(tag, "UL", struct.unpack("<L", UL_MARK)[0])
    for tag, _kw in outside_table("DS", 40):
        ds.add_new(tag, "DS", NUMBER_MARK)
    # Made-up tags in even groups: unknown to the dictionary, whatever their VR.
    ds.add_new(0x00729990, "CS", f"QZ1X{where}")
    ds.add_new(0x00729992, "UR", f"http://{URL_HOST}/made-up/{where}")
    ds.add_new(0x00729994, "OB", b"QZ1XOB" + where.encode() + b"!")


def _implicit_item_bytes(item: Dataset) -> bytes:
    """The value bytes of a one-item sequence, implicit VR little endian (how UN holds SQ)."""
    holder = Dataset()
    holder.ReferencedSeriesSequence = Sequence([item])
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True
    write_dataset(buffer, holder)
    return buffer.getvalue()[8:]


def unlisted_file() -> bytes:
    """Classes 1, 5, 6 at the top level and nested (in a walked and in an unlisted sequence)."""
    ds = minimal_dataset(PatientID=PATIENT_ID)
    _plant_unlisted(ds, "T")
    walked = Dataset()
    _plant_unlisted(walked, "N")
    ds.RealWorldValueMappingSequence = Sequence([walked])  # allow-listed: walked
    unlisted = Dataset()
    unlisted.add_new(0x00081040, "LO", "QZ1SEQ")
    ds.ReferencedSeriesSequence = Sequence([unlisted])  # not listed: removed whole
    return encode(ds)


def wrong_vr_file() -> bytes:
    """Classes 2 and 3: unknown tags as UN, known ones as UN and with a binary VR."""
    ds = minimal_dataset(PatientID=PATIENT_ID)
    ds.add_new(0x00729996, "UN", b"QZ2UNKNOWN")
    ds.add_new(0x00181016, "UN", b"QZ2KNOWNUN ")  # Secondary Capture Device Manufacturer
    ds.add_new(0x00180015, "UN", b"QZ2BODYPART ")  # Body Part Examined: terms apply after UN
    ds.add_new(0x00181018, "OB", b"QZ3SCDMODEL ")  # Secondary Capture Device Model as OB
    ds.add_new(0x00080070, "OB", b"QZ3MANUFACTURER ")  # Manufacturer as OB
    carrier = Dataset()
    carrier.PatientName = "QZ2^ITEMNAME"
    carrier.add_new(0x00081040, "LO", "QZ2DEPT")
    # A walked sequence (Shared Functional Groups) and an unknown tag, both sent as UN
    # holding an encoded item: the known one is read as a sequence and de-identified.
    ds.add_new(0x00729998, "UN", _implicit_item_bytes(carrier))
    # pydicom would turn a known tag's UN back into its dictionary VR while writing.
    pydicom.config.replace_un_with_known_vr = False
    try:
        ds.add_new(0x52009229, "UN", _implicit_item_bytes(carrier))
        return encode(ds)
    finally:
        pydicom.config.replace_un_with_known_vr = True


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def code_sequence_file() -> bytes:
    """Class 4: code sequences, kept by the table or the allow-list, up to 4 levels deep."""
    ds = minimal_dataset(PatientID=PATIENT_ID)
    ds.InstitutionCodeSequence = Sequence([_code("QZ4INST", "99LOCAL", "QZ4 St Mary Hospital")])
    person = Dataset()
    person.PersonIdentificationCodeSequence = Sequence(
        [_code("QZ4PERSONID", "99HR", "QZ4 Smith John")]
    )
    person.PersonName = "QZ4^PERSON"
    ds.OperatorIdentificationSequence = Sequence([person])
    ds.PerformedProtocolCodeSequence = Sequence([_code("QZ4PROT", "99LOCAL", "QZ4 Dr protocol")])
    # A known SNOMED code with a sender's meaning: kept, meaning rewritten from the vocabulary.
    ds.AnatomicRegionSequence = Sequence(
        [_code("51185008", "SCT", "QZ4 chest of Mr Smith"), _code("QZ4AR", "SCT", "QZ4 made up")]
    )
    deep = Dataset()
    deep.PurposeOfReferenceCodeSequence = Sequence([_code("QZ4DEEP", "DCM", "QZ4 deep meaning")])
    level3 = Dataset()
    level3.SourceImageSequence = Sequence([deep])
    level2 = Dataset()
    level2.DerivationImageSequence = Sequence([level3])
    level1 = Dataset()
    level1.PerFrameFunctionalGroupsSequence = Sequence([level2])
    ds.SharedFunctionalGroupsSequence = Sequence([level1])
    concept = Dataset()
    concept.ConceptCodeSequence = Sequence([_code("QZ4SR", "DCM", "QZ4 SR meaning")])
    ds.ContentSequence = Sequence([concept])
    return encode(ds)


def free_text_file() -> bytes:
    """Class 8: allow-listed free text holding identity."""
    ds = minimal_dataset(PatientID=PATIENT_ID)
    ds.ManufacturerModelName = "QZEIGHTMODEL Smith"
    ds.SoftwareVersions = "call 5550134"
    ds.SequenceName = "QZEIGHTSEQ"
    ds.ConvolutionKernel = "QZEIGHTKERNEL"
    ds.WindowCenterWidthExplanation = "QZEIGHTWINDOW Dr Who"
    ds.ReceiveCoilName = "QZEIGHTCOIL"
    voi = Dataset()
    voi.LUTExplanation = "QZEIGHTLUT"
    voi.LUTDescriptor = [2, 0, 16]
    voi.add_new(0x00283006, "US", [0, 1])  # LUT Data
    ds.VOILUTSequence = Sequence([voi])
    ds.Manufacturer = "QZEIGHT Medical"
    return encode(ds)


def descriptor_file() -> bytes:
    """Class 9: descriptors in other scripts and digit runs, under clean-descriptors."""
    ds = minimal_dataset(PatientID=PATIENT_ID)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SeriesDescription = "ΓΙΑΝΝΗΣ CHEST"
    ds.StudyDescription = "Иванов CT"
    ds.ProtocolName = "张伟 CT"
    ds.ImageComments = "CHEST 5550134 19610317"
    return encode(ds)


def descriptor_markers() -> set[bytes]:
    """The planted descriptor words as stored (UTF-8) and the digit runs."""
    return {"ΓΙΑΝΝΗΣ".encode(), "Иванов".encode(), "张伟".encode(), b"5550134", b"19610317"}


def _jpeg_with_text_segments(pixels: Image.Image) -> bytes:
    buffer = io.BytesIO()
    pixels.save(buffer, format="JPEG", quality=90)
    plain = buffer.getvalue()

    def segment(code: int, payload: bytes) -> bytes:
        return bytes([0xFF, code]) + struct.pack(">H", len(payload) + 2) + payload

    extra = (
        segment(0xFE, b"QZ7COMMENT Smith^John")
        + segment(0xE1, b"Exif\x00\x00QZ7EXIF 19610317")
        + segment(0xED, b"Photoshop 3.0\x00QZ7IRB")
        + segment(0xE2, b"ICC_PROFILE\x00QZ7ICC")
    )
    # After SOI and JFIF APP0; a second comment after the frame header too.
    app0_end = 2 + 2 + struct.unpack(">H", plain[4:6])[0]
    with_text = plain[:app0_end] + extra + plain[app0_end:]
    sos = with_text.index(b"\xff\xda")
    return with_text[:sos] + segment(0xFE, b"QZ7LATECOMMENT") + with_text[sos:]


def jpeg_file(frames: int = 2) -> tuple[bytes, list[bytes]]:
    """Class 7: encapsulated baseline JPEG frames with COM, APP1, APP2 and APP13 segments."""
    ds = minimal_dataset(PatientID=PATIENT_ID, Modality="CT")
    pictures = []
    for index in range(frames):
        picture = Image.new("L", (16, 16))
        picture.putdata([(x * 16 + index * 40) % 256 for x in range(256)])
        pictures.append(_jpeg_with_text_segments(picture))
    ds.Rows, ds.Columns = 16, 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate(pictures, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "01"
    return encode(ds, JPEG_BASELINE), pictures


def burned_in_files() -> Iterator[tuple[str, bytes]]:
    """Class 10: projection and angiography images without Burned In Annotation."""
    for modality, sop_class in (
        ("CR", "1.2.840.10008.5.1.4.1.1.1"),
        ("XA", "1.2.840.10008.5.1.4.1.1.12.1"),
        ("DX", "1.2.840.10008.5.1.4.1.1.1.1"),
        ("RF", "1.2.840.10008.5.1.4.1.1.12.2"),
    ):
        ds = minimal_dataset(PatientID=PATIENT_ID, Modality=modality, SOPClassUID=sop_class)
        del ds.BurnedInAnnotation
        yield modality, encode(ds, pixels=b"\x00\x01" * 64)


def small_leaks_file() -> bytes:
    """Class 11: free text in a non-date C row under modified dates; a free-text character
    set; safe-private creators matched loosely and safe-listed values that are not numbers."""
    ds = minimal_dataset(PatientID=PATIENT_ID)
    ds.TimezoneOffsetFromUTC = "QZ11TZ Leith"
    loose = ds.private_block(0x0019, "siemens mr header ", create=True)
    loose.add_new(0x0C, "IS", "4711")  # lower-case creator: not the safe one
    strict = ds.private_block(0x0021, "SIEMENS MR HEADER", create=True)
    strict.add_new(0x0C, "LO", "QZ11BVALUE")  # safe element, but not a number
    return encode(ds)


def corpus(root: Path) -> Planted:
    """Write the whole adversarial corpus under ``root``."""
    planted = Planted()
    planted.add(
        root / "unlisted.dcm",
        unlisted_file(),
        b"QZ1C",
        b"QZ1X",
        b"QZAS",
        b"QZ1B",
        b"QZ1SEQ",
        UL_MARK,
        NUMBER_MARK.encode(),
        HOSPITAL_ROOT.encode(),
        URL_HOST.encode(),
    )
    planted.add(root / "wrong-vr.dcm", wrong_vr_file(), b"QZ2", b"QZ3")
    planted.add(root / "codes.dcm", code_sequence_file(), b"QZ4")
    planted.add(root / "free-text.dcm", free_text_file(), b"QZEIGHT", b"Smith", b"5550134")
    planted.add(root / "jpeg.dcm", jpeg_file()[0], b"QZ7", b"Exif", b"Photoshop", b"ICC_PROFILE")
    planted.add(root / "small.dcm", small_leaks_file(), b"QZ11", b"siemens mr header")
    return planted
