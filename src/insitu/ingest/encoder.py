"""Encodes a de-identified dataset back to Part 10 bytes, faster than ``dcmwrite``.

Elements the engine left untouched are still pydicom ``RawDataElement``s holding their original
bytes: they are copied with a hand-built header. Changed values that are plain ASCII text (what
de-identification writes: dummies, empties, new UIDs, shifted dates, pseudonyms) are encoded
here too, by the PS3.5 rules for text (backslash between values, padded to even length with a
space, or NUL for UI). Everything else (sequences, numbers, non-ASCII text, which needs the
Specific Character Set) goes through pydicom's own element writer.
"""

from __future__ import annotations

import struct

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import UID

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
)
# Text VRs whose ASCII values encode the same whatever the character set (PN is left to
# pydicom: its values are PersonName objects with component groups).
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_MAX_SHORT_LENGTH = 0xFFFE
PREAMBLE = b"\x00" * 128 + b"DICM"


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    group, element = tag >> 16, tag & 0xFFFF
    if vr == b"OB":
        return struct.pack("<HH2s2xL", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Preamble, prefix and a File Meta Information group (always Explicit VR LE)."""
    body = b"".join(
        (
            _meta_element(0x00020001, b"OB", b"\x00\x01"),
            _meta_element(0x00020002, b"UI", sop_class_uid.encode()),
            _meta_element(0x00020003, b"UI", sop_instance_uid.encode()),
            _meta_element(0x00020010, b"UI", transfer_syntax.encode()),
            _meta_element(0x00020012, b"UI", implementation_class_uid.encode()),
            _meta_element(0x00020013, b"SH", implementation_version_name.encode()),
        )
    )
    return PREAMBLE + struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _text_value(vr: str, value: object) -> bytes | None:
    """The encoded value of an ASCII text element, or None when pydicom must encode it."""
    if value is None or value == "":
        return b""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple | MultiValue) and all(isinstance(v, str) for v in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "
    return raw


def encode_dataset(ds: Dataset, transfer_syntax: UID) -> bytes:
    """The dataset (without file meta) in the given transfer syntax's encoding."""
    little = transfer_syntax.is_little_endian
    implicit = transfer_syntax.is_implicit_VR
    endian = "<" if little else ">"
    short_header = struct.Struct(endian + "HH2sH")
    long_header = struct.Struct(endian + "HH2s2xL")
    implicit_header = struct.Struct(endian + "HHL")
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    encodings = ds._character_set
    write = fp.write
    for tag in sorted(ds.keys()):
        elem = ds.get_item(tag)
        if elem is None:
            continue
        if (
            isinstance(elem, RawDataElement)
            and isinstance(elem.value, bytes)
            and elem.length != 0xFFFFFFFF
            and elem.is_little_endian == little
            and elem.is_implicit_VR == implicit
            and (implicit or (elem.VR and len(elem.VR) == 2))
        ):
            raw_value = elem.value
            group, element = tag >> 16, tag & 0xFFFF
            length = len(raw_value)
            if implicit:
                write(implicit_header.pack(group, element, length))
            else:
                vr = str(elem.VR)
                if vr in _LONG_VRS:
                    write(long_header.pack(group, element, vr.encode(), length))
                else:
                    write(short_header.pack(group, element, vr.encode(), length))
            write(raw_value)
            continue
        if not elem.is_raw and elem.VR in _TEXT_VRS:
            text = _text_value(elem.VR, elem.value)
            if text is not None:
                group, element = tag >> 16, tag & 0xFFFF
                length = len(text)
                if implicit:
                    write(implicit_header.pack(group, element, length))
                    write(text)
                    continue
                if elem.VR in _LONG_VRS:
                    write(long_header.pack(group, element, elem.VR.encode(), length))
                    write(text)
                    continue
                if length <= _MAX_SHORT_LENGTH:
                    write(short_header.pack(group, element, elem.VR.encode(), length))
                    write(text)
                    continue
        write_data_element(fp, ds[tag] if elem.is_raw else elem, encodings)
    return fp.getvalue()
