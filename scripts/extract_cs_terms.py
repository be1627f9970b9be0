"""Extract the Enumerated Values and Defined Terms of every CS attribute from the DICOM standard.

The source is the MIT-licensed innolitics ``dicom-standard`` data (PyPI wheel
``dicom-standard==0.1.0``, which ships ``standard/module_to_attributes.json``,
``macro_to_attributes.json`` and ``references.json``). The output,
``src/insitu/ingest/deid/data/cs-terms.json``, is versioned with the package: insitu never
downloads anything at run time. Re-run after updating the source:

    pip download --no-deps -d /tmp/std dicom-standard==0.1.0
    python scripts/extract_cs_terms.py /tmp/std/dicom_standard-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import html
import json
import re
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

from pydicom.datadict import dictionary_VR, keyword_for_tag

OUTPUT = Path(__file__).resolve().parent.parent / "src/insitu/ingest/deid/data/cs-terms.json"
_TERMS_BLOCK = re.compile(
    r"<strong>\s*(?:Enumerated Values|Defined Terms)[^<]*</strong>.*?<dl>(.*?)</dl>", re.DOTALL
)
_TERM = re.compile(r"<dt>\s*(?:<span>)?\s*(.*?)\s*(?:</span>)?\s*</dt>", re.DOTALL)
_SECTION_LINK = re.compile(r"sect_([A-Z0-9.]+)")
# A CS value: upper-case letters, digits, space and underscore, at most 16 characters.
_CS_VALUE = re.compile(r"^[A-Z0-9 _]{1,16}$")


def _terms(fragment: str) -> set[str]:
    found: set[str] = set()
    for block in _TERMS_BLOCK.findall(fragment):
        for raw in _TERM.findall(block):
            value = html.unescape(re.sub(r"<[^>]+>", "", raw)).strip()
            if _CS_VALUE.match(value):
                found.add(value)
    return found


def _load(wheel: zipfile.ZipFile, name: str) -> object:
    member = next(n for n in wheel.namelist() if n.endswith(f"standard/{name}"))
    return json.loads(wheel.read(member))


def main(source: str) -> None:
    """Write the CS vocabulary file from the ``dicom-standard`` wheel at ``source``."""
    with zipfile.ZipFile(source) as wheel:
        references = _load(wheel, "references.json")
        rows = [
            *_load(wheel, "module_to_attributes.json"),
            *_load(wheel, "macro_to_attributes.json"),
        ]  # type: ignore[misc]
    assert isinstance(references, dict)
    by_keyword: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        text = row["tag"].strip("()").replace(",", "")
        if not re.fullmatch(r"[0-9A-Fa-f]{8}", text):
            continue  # repeating groups (50xx, 60xx) are the table's business
        tag = int(text, 16)
        try:
            if dictionary_VR(tag) != "CS":
                continue
        except KeyError:
            continue
        keyword = keyword_for_tag(tag)
        terms = _terms(row["description"])
        for link in row.get("externalReferences") or ():
            section = references.get(link.get("sourceUrl", ""))
            if section:
                terms |= _terms(section)
        if terms:
            by_keyword[keyword] |= terms
    OUTPUT.write_text(
        json.dumps({k: sorted(v) for k, v in sorted(by_keyword.items())}, indent=0) + "\n"
    )
    print(
        f"{len(by_keyword)} CS attributes, {sum(map(len, by_keyword.values()))} terms -> {OUTPUT}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
