"""Coded entries that may stay: registered schemes, codes known to the project.

The vocabulary is pydicom's coded concepts (``pydicom.sr``, built from PS3.16 and the coding
schemes it uses), loaded once per process. A kept item is rebuilt from the vocabulary: its
Code Meaning is the vocabulary's, never the sender's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from pydicom.dataset import Dataset

# Coding schemes registered in PS3.16 Table 8-1 that the vocabulary covers.
REGISTERED_SCHEMES = frozenset(
    {"DCM", "SCT", "LN", "RADLEX", "UCUM", "NCIt", "FMA", "MDC", "UMLS", "RXNORM", "MSH", "I10"}
)
CODE_VALUE = 0x00080100
CODING_SCHEME_DESIGNATOR = 0x00080102
CODE_MEANING = 0x00080104


@cache
def code_meanings() -> Mapping[tuple[str, str], str]:
    """(scheme, code value) → code meaning, for every concept pydicom knows."""
    from pydicom.sr._concepts_dict import concepts

    typed: dict[str, dict[str, dict[str, tuple[str, list[int]]]]] = concepts  # type: ignore[assignment]
    meanings: dict[tuple[str, str], str] = {}
    for scheme, by_name in typed.items():
        if scheme not in REGISTERED_SCHEMES:
            continue
        for codes in by_name.values():
            for value, (meaning, _cids) in codes.items():
                meanings[(scheme, value)] = meaning
    return meanings


def clean_code_item(item: Dataset) -> Dataset | None:
    """A new item holding only a known code, or None when the item's code is not known."""
    scheme = _text(item, CODING_SCHEME_DESIGNATOR)
    value = _text(item, CODE_VALUE)
    meaning = code_meanings().get((scheme, value)) if scheme and value else None
    if meaning is None:
        return None
    clean = Dataset()
    clean.CodeValue = value
    clean.CodingSchemeDesignator = scheme
    clean.CodeMeaning = meaning
    return clean


def _text(item: Dataset, tag: int) -> str:
    elem = item.get_item(tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip(" \x00")
