"""Reading element values as text, and the allow-list's value rules on them."""

from __future__ import annotations

import re

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from insitu.ingest.deid.allowlist import Entry, Rule
from insitu.ingest.deid.vocabulary import is_clean_descriptor, is_technical
from insitu.ingest.pseudonyms import Pseudonymizer

REGISTERED_UID_ROOT = "1.2.840.10008."
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def text_values(elem: DataElement | RawDataElement) -> list[str]:
    """The values of a text element, from its raw bytes when not converted (ASCII view)."""
    value = elem.value
    if isinstance(value, bytes):
        text = value.decode("latin-1").rstrip("\x00 ")
        return text.split("\\") if text else []
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def decoded_values(ds: Dataset, tag: int) -> list[str] | None:
    """The values of a text element decoded with the dataset's Specific Character Set.

    Plain ASCII is read from the raw bytes (fast); anything else goes through pydicom, which
    applies the character set. None when the value cannot be decoded at all.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    raw = elem.value
    if isinstance(raw, bytes) and raw.isascii():
        return [v.strip(" \x00") for v in text_values(elem)]
    try:
        converted = ds[tag]
    except Exception:  # noqa: BLE001 - bytes that do not decode are not kept
        return None
    return [v.strip(" \x00") for v in text_values(converted)]


def map_uid(pseudonymizer: Pseudonymizer, uid: str) -> str:
    """A UID remapped with the keyed pseudonym, unless it is a registered DICOM UID."""
    if not uid or uid.startswith(REGISTERED_UID_ROOT):
        return uid
    return pseudonymizer.uid(uid)


def all_clean(texts: list[str]) -> bool:
    """Whether every value is a clean descriptor (the C action's test)."""
    return all(is_clean_descriptor(v) for v in texts)


def passes(rule: Rule, entry: Entry, vr: str, texts: list[str]) -> bool:
    """Whether decoded text values pass a text rule (number, vocabulary, technical,
    descriptor, pattern); an element with no values passes (it holds nothing)."""
    present = [v for v in texts if v]
    if rule is Rule.number:
        syntax = _INTEGER if vr == "IS" else _DECIMAL
        return vr in ("DS", "IS") and all(syntax.fullmatch(v) for v in present)
    if rule is Rule.vocabulary:
        return all(entry.accepts_term(v) for v in present)
    if rule is Rule.technical:
        return all(is_technical(v) for v in present)
    if rule is Rule.descriptor:
        return all(is_clean_descriptor(v) for v in present)
    if rule is Rule.pattern and entry.pattern is not None:
        return all(entry.pattern.fullmatch(v) for v in present)
    return False
