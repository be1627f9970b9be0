"""The de-identification engine: applies the resolved Table E.1-1 to a pydicom Dataset.

It walks the elements present (never the 621 rows), recursing into every kept sequence, so the
cost is proportional to the header. Elements it does not change stay as raw bytes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from insitu.ingest.deid.table import (
    BASIC_PROFILE_CODE,
    Action,
    DeidOption,
    Options,
    ResolvedProfile,
    resolve_profile,
)
from insitu.ingest.deid.vocabulary import (
    SAFE_PRIVATE_ELEMENTS,
    SAFE_TEXT_KEYWORDS,
    TEXT_VRS,
    is_clean_descriptor,
)
from insitu.ingest.pseudonyms import Pseudonymizer

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
_PSEUDONYM_TAGS = frozenset({PATIENT_ID, PATIENT_NAME})
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})
_DUMMY_TEXT = {
    "PN": "ANONYMIZED",
    "AE": "ANONYMIZED",
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "UR": "urn:insitu:removed",
}
_DATE_RE = re.compile(r"^(\d{8})(.*)$", re.DOTALL)

# Tags handled by our own code after the walk; the walk must leave them to us.
_WRITTEN_AFTER = frozenset(
    {
        0x00120062,  # PatientIdentityRemoved
        0x00120063,  # DeidentificationMethod
        0x00120064,  # DeidentificationMethodCodeSequence
        0x00280303,  # LongitudinalTemporalInformationModified
    }
)


@dataclass(frozen=True)
class SubjectContext:
    """What the engine needs to know about the subject an instance belongs to."""

    site: str
    original_patient_id: str
    pseudonym: str
    date_shift: dt.timedelta


@dataclass
class DeidReport:
    """What was done to one instance: action counts keyed by (attribute, action letter)."""

    actions: Counter[tuple[str, str]] = field(default_factory=Counter)


def shift_date(value: str, shift: dt.timedelta) -> str | None:
    """Shift a DA value (``YYYYMMDD``); None when it is not a full valid date."""
    try:
        day = dt.datetime.strptime(value.strip(), "%Y%m%d").replace(tzinfo=dt.UTC).date()
    except ValueError:
        return None
    return (day + shift).strftime("%Y%m%d")


def shift_datetime(value: str, shift: dt.timedelta) -> str | None:
    """Shift the date part of a DT value, keeping time and offset; None when unparseable."""
    match = _DATE_RE.match(value.strip())
    if match is None:
        return None
    shifted = shift_date(match.group(1), shift)
    return None if shifted is None else shifted + match.group(2)


class DeidEngine:
    """Applies one resolved profile with one secret. Reused for every instance of a batch."""

    def __init__(self, options: Options, pseudonymizer: Pseudonymizer) -> None:
        self.options = options
        self.profile: ResolvedProfile = resolve_profile(options)
        self.pseudonymizer = pseudonymizer
        self._decisions: dict[tuple[int, str], tuple[str, Action]] = {}
        self._method_elements = self._build_method_elements()
        self._unknown_dates = (
            Action.keep
            if DeidOption.retain_long_full_dates in options
            else Action.shift
            if DeidOption.retain_long_modified_dates in options
            else Action.dummy
        )

    # -- decisions -------------------------------------------------------------------------

    def decide(self, tag: int, vr: str) -> tuple[str, Action]:
        """The (attribute label, action) for a non-private tag with a VR; memoised."""
        key = (tag, vr)
        found = self._decisions.get(key)
        if found is not None:
            return found
        decision = self._decide_uncached(tag, vr)
        self._decisions[key] = decision
        return decision

    def _decide_uncached(self, tag: int, vr: str) -> tuple[str, Action]:
        label = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if tag in _PSEUDONYM_TAGS:
            return label, Action.pseudonym
        if tag in _WRITTEN_AFTER:
            return label, Action.remove
        if tag & 0xFFFF == 0:
            return label, Action.remove  # group lengths are retired and recomputed
        row = self.profile.lookup(tag)
        if row is not None:
            return (row[0].name if "XX" in row[0].tag else label), row[1]
        if vr in ("DA", "DT"):
            return label, self._unknown_dates
        if vr in TEXT_VRS and label not in SAFE_TEXT_KEYWORDS:
            return label, Action.remove
        return label, Action.keep

    # -- walk ------------------------------------------------------------------------------

    def apply(self, ds: Dataset, subject: SubjectContext) -> DeidReport:
        """De-identify ``ds`` in place and return what was done."""
        report = DeidReport()
        self._walk(ds, subject, report)
        self._record_method(ds)
        return report

    def _walk(self, ds: Dataset, subject: SubjectContext, report: DeidReport) -> None:
        to_delete: list[int] = []
        private_blocks_kept: set[tuple[int, int]] = set()
        private_creators: list[int] = []
        for elem in list(ds.elements()):
            tag = int(elem.tag)
            group = tag >> 16
            if group & 1:
                element = tag & 0xFFFF
                if 0x0010 <= element <= 0x00FF:
                    private_creators.append(tag)
                    continue
                if self._keep_private(ds, tag):
                    private_blocks_kept.add((group, element >> 8))
                    report.actions[("private attribute", Action.keep.value)] += 1
                    continue
                report.actions[(self.profile.private[0].name, Action.remove.value)] += 1
                to_delete.append(tag)
                continue
            vr = _vr_of(elem, tag)
            label, action = self.decide(tag, vr)
            report.actions[(label, action.value)] += 1
            if action is Action.remove:
                to_delete.append(tag)
            elif action is Action.keep:
                if vr == "SQ":
                    self._walk_items(ds[tag], subject, report)
            else:
                self._transform(ds, tag, vr, action, subject, report)
        for tag in private_creators:
            if ((tag >> 16), tag & 0xFF) not in private_blocks_kept:
                to_delete.append(tag)
        for tag in to_delete:
            del ds[tag]

    def _walk_items(self, elem: DataElement, subject: SubjectContext, report: DeidReport) -> None:
        for item in elem.value or ():
            self._walk(item, subject, report)

    def _keep_private(self, ds: Dataset, tag: int) -> bool:
        if DeidOption.retain_safe_private not in self.options:
            return False
        creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8)
        if creator_tag not in ds:
            return False
        creator = str(ds[creator_tag].value or "").strip().upper()
        return (creator, tag & 0xFF) in SAFE_PRIVATE_ELEMENTS

    # -- actions ---------------------------------------------------------------------------

    def _transform(
        self,
        ds: Dataset,
        tag: int,
        vr: str,
        action: Action,
        subject: SubjectContext,
        report: DeidReport,
    ) -> None:
        if vr == "SQ":
            elem = ds[tag]
            if action is Action.zero:
                elem.value = Sequence()
            else:
                # D, U, C and S on a sequence keep its structure and de-identify its items.
                self._walk_items(elem, subject, report)
            return
        # Work on the stored text where possible: converting every element through pydicom
        # costs more than the rest of the de-identification together.
        original = ds.get_item(tag)
        if original is None:
            return
        if vr in _BINARY_VRS or vr in _NUMBER_VRS:
            value = ds[tag].value
            if action is Action.zero:
                ds[tag] = DataElement(tag, vr, _empty_value(vr))
            elif action is not Action.keep and value not in (None, b"", ""):
                ds[tag] = DataElement(tag, vr, _dummy_binary(value, vr))
            return
        values = _text_values(original)
        new_values: list[str] | None
        if action is Action.pseudonym:
            new_values = [subject.pseudonym]
        elif action is Action.zero:
            new_values = []
        elif action is Action.dummy:
            new_values = self._dummy(values, vr)
        elif action is Action.uid:
            new_values = self._map_uids(values) if vr == "UI" else self._dummy(values, vr)
        elif action is Action.shift:
            new_values = self._shift(values, vr, subject)
        elif action is Action.clean:
            new_values = None if _all_clean(values) else self._dummy(values, vr)
        else:
            new_values = None
        if new_values is not None:
            ds[tag] = DataElement(tag, vr, _join(new_values))

    def _map_uids(self, values: list[str]) -> list[str]:
        return [self.pseudonymizer.uid(v) if v else v for v in values]

    def _dummy(self, values: list[str], vr: str) -> list[str]:
        if not any(values):
            return values
        if vr == "UI":
            return self._map_uids(values)
        return [_DUMMY_TEXT.get(vr, "ANONYMIZED")]

    def _shift(self, values: list[str], vr: str, subject: SubjectContext) -> list[str] | None:
        if vr not in ("DA", "DT") or not any(values):
            return None  # a whole-day shift leaves times (TM) and ages as they are
        shifter = shift_date if vr == "DA" else shift_datetime
        shifted = [shifter(v, subject.date_shift) if v else v for v in values]
        if any(s is None for s in shifted):
            return [_DUMMY_TEXT[vr]]  # a date we cannot shift is not kept as it is
        return [s or "" for s in shifted]

    def _record_method(self, ds: Dataset) -> None:
        for elem in self._method_elements:
            ds[elem.tag] = elem

    def _build_method_elements(self) -> tuple[DataElement, ...]:
        """The elements recording profile and options; built once, shared by every instance."""
        codes = [BASIC_PROFILE_CODE, *sorted(o.code for o in self.options.enabled)]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        if DeidOption.retain_long_full_dates in self.options:
            temporal = "UNMODIFIED"
        elif DeidOption.retain_long_modified_dates in self.options:
            temporal = "MODIFIED"
        else:
            temporal = "REMOVED"
        return (
            DataElement(0x00120062, "CS", "YES"),
            # LO holds 64 characters: the code sequence is the complete record.
            DataElement(0x00120063, "LO", f"insitu PS3.15 E.1-1 {self.options.fingerprint}"[:64]),
            DataElement(0x00120064, "SQ", Sequence(items)),
            DataElement(0x00280303, "CS", temporal),
        )


def _vr_of(elem: DataElement | RawDataElement, tag: int) -> str:
    vr = elem.VR
    if vr and len(vr) == 2:
        return str(vr)
    try:
        return str(dictionary_VR(tag))[:2]
    except KeyError:
        return "UN"


def _text_values(elem: DataElement | RawDataElement) -> list[str]:
    value = elem.value
    if isinstance(value, bytes):
        text = value.decode("latin-1").rstrip("\x00 ")
        return text.split("\\") if text else []
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def _join(values: list[str]) -> str | None:
    return "\\".join(values) if values else None


def _all_clean(values: list[str]) -> bool:
    return all(is_clean_descriptor(v) for v in values)


def _dummy_binary(value: Any, vr: str) -> Any:
    if vr in _BINARY_VRS:
        return bytes(len(value)) if isinstance(value, bytes | bytearray) else b""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [0] * len(value)
    return 0


def _empty_value(vr: str) -> Any:
    if vr in _BINARY_VRS:
        return b""
    if vr in _NUMBER_VRS or vr in ("DS", "IS"):
        return None
    return ""
