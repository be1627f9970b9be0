"""The de-identification engine: Table E.1-1 plus the allow-list, deny by default.

An element stays only if (a) Table E.1-1 names it and its action keeps it (K, or C/D/U/S with
the value rewritten), or (b) the allow-list names it and its value passes the entry's rule.
Everything else is removed and counted by attribute. The engine walks the elements present
(never the 621 rows), so the cost is proportional to the header; elements it does not change
stay as raw bytes.
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

from insitu.ingest.deid import values
from insitu.ingest.deid.allowlist import AllowList, Entry, Rule, shipped_allow_list
from insitu.ingest.deid.codes import clean_code_item
from insitu.ingest.deid.table import (
    BASIC_PROFILE_CODE,
    Action,
    DeidOption,
    Options,
    ResolvedProfile,
    resolve_profile,
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
# Under retain-long-modified-dates a C row that is not a date is kept only in its own syntax.
_KEPT_UNDER_SHIFT = {
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "AS": re.compile(r"\d{3}[DWMY]"),
    "SH": re.compile(r"[+-]\d{4}"),  # Timezone Offset From UTC
}
_SYNTAX_CHECKED_WHEN_KEPT = frozenset({"DA", "DT", "TM", "AS"})
_TIMEZONE_OFFSET = 0x00080201
# Curves (50xx) and overlays (60xx) cannot be cleaned of text drawn into them: both groups
# are removed as a whole, so no half module (rows without data) is left behind.
_GRAPHIC_GROUPS = 0x5000, 0x6000

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


@dataclass(frozen=True)
class Rescrub:
    """Re-applying the engine to an instance it (or an older version) already de-identified:
    identifiers it pseudonymised stay as they are (a second pseudonym would break every link
    to them); only what the current rules remove or clean changes."""

    remap_other_uids: bool
    """UIDs outside the table were kept by engines before the allow-list (records without
    ``allow-list:``): those still carry the hospital's root and are remapped now."""


@dataclass
class DeidReport:
    """What was done to one instance: action counts keyed by (attribute, action letter)."""

    actions: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(frozen=True)
class Decision:
    """What happens to one (tag, VR): a table action, or an allow-list entry's rule."""

    label: str
    action: Action
    entry: Entry | None = None


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


def _tag_label(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class DeidEngine:
    """Applies one resolved profile and one allow-list with one secret, for a whole batch."""

    def __init__(
        self,
        options: Options,
        pseudonymizer: Pseudonymizer,
        allow_list: AllowList | None = None,
        rescrub: Rescrub | None = None,
    ) -> None:
        self.options = options
        self.rescrub = rescrub
        self.profile: ResolvedProfile = resolve_profile(options)
        self.pseudonymizer = pseudonymizer
        self.allow_list = allow_list or shipped_allow_list()
        self._decisions: dict[tuple[int, str], Decision] = {}
        self._dictionary_vrs: dict[int, str | None] = {}
        self._method_elements = self._build_method_elements()
        self._unknown_dates = (
            Action.keep
            if DeidOption.retain_long_full_dates in options
            else Action.shift
            if DeidOption.retain_long_modified_dates in options
            else Action.dummy
        )

    # -- decisions -------------------------------------------------------------------------

    def decide(self, tag: int, vr: str) -> Decision:
        """The decision for a non-private tag with a VR; memoised."""
        key = (tag, vr)
        found = self._decisions.get(key)
        if found is None:
            found = self._decisions[key] = self._decide_uncached(tag, vr)
        return found

    def _decide_uncached(self, tag: int, vr: str) -> Decision:
        keyword = keyword_for_tag(tag)
        label = keyword or _tag_label(tag)
        if tag in _PSEUDONYM_TAGS:
            return Decision(label, Action.pseudonym)
        if tag in _WRITTEN_AFTER or tag & 0xFFFF == 0:
            return Decision(label, Action.remove)  # group lengths are retired and recomputed
        if (tag >> 16) & 0xFF00 in _GRAPHIC_GROUPS:
            group = "curve (50xx)" if tag >> 24 == 0x50 else "overlay (60xx)"
            return Decision(group, Action.remove)
        row = self.profile.lookup(tag)
        if row is not None:
            return Decision(row[0].name if "XX" in row[0].tag else label, row[1])
        if keyword:
            entry = self.allow_list.entry(tag, vr)
            if entry is not None:
                return Decision(label, Action.allowed, entry)
        # Deny by default: removed, and counted under the tag so stewards see what went.
        return Decision(f"{label} {_tag_label(tag)}" if keyword else label, Action.remove)

    def dictionary_vr(self, tag: int) -> str | None:
        """The single VR the dictionary gives a tag (the first of an ambiguous list)."""
        if tag in self._dictionary_vrs:
            return self._dictionary_vrs[tag]
        try:
            vr: str | None = str(dictionary_VR(tag)).split(" or ")[0]
        except KeyError:
            vr = None
        self._dictionary_vrs[tag] = vr
        return vr

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
                if self._keep_private(ds, tag, subject, report):
                    private_blocks_kept.add((group, element >> 8))
                    report.actions[("private attribute", Action.keep.value)] += 1
                    continue
                report.actions[(self.profile.private[0].name, Action.remove.value)] += 1
                to_delete.append(tag)
                continue
            vr = _vr_of(elem, tag)
            wanted = self.dictionary_vr(tag)
            if wanted is not None and vr != wanted and not _vr_compatible(vr, tag):
                # A dictionary attribute sent with another VR (or as UN) is read as the
                # dictionary says, so the table and allow-list see what it really holds.
                if not _reinterpret(ds, tag, wanted):
                    report.actions[(keyword_for_tag(tag) or _tag_label(tag), "X")] += 1
                    to_delete.append(tag)
                    continue
                vr = wanted
            decision = self.decide(tag, vr)
            if decision.action is Action.allowed and decision.entry is not None:
                kept = self._allowed(ds, tag, vr, decision.entry, subject, report)
                report.actions[(decision.label, "A" if kept else "X")] += 1
                if not kept:
                    to_delete.append(tag)
                continue
            report.actions[(decision.label, decision.action.value)] += 1
            if decision.action is Action.remove:
                to_delete.append(tag)
            elif vr == "SQ":
                self._sequence(ds, tag, decision.action, subject, report)
            elif decision.action is not Action.keep:
                self._transform(ds, tag, vr, decision.action, subject)
            elif vr in _SYNTAX_CHECKED_WHEN_KEPT or tag == _TIMEZONE_OFFSET:
                self._keep_in_syntax(ds, tag, vr)
        for tag in private_creators:
            if ((tag >> 16), tag & 0xFF) not in private_blocks_kept:
                to_delete.append(tag)
        for tag in to_delete:
            del ds[tag]

    def _walk_items(self, elem: DataElement, subject: SubjectContext, report: DeidReport) -> None:
        for item in elem.value or ():
            self._walk(item, subject, report)

    def _sequence(
        self, ds: Dataset, tag: int, action: Action, subject: SubjectContext, report: DeidReport
    ) -> None:
        """A table action on a sequence: Z empties it, D replaces its content with one empty
        item (never walked), K/C/U keep it and de-identify its items."""
        if action is Action.zero:
            ds[tag] = DataElement(tag, "SQ", Sequence())
        elif action in (Action.dummy, Action.shift, Action.pseudonym):
            ds[tag] = DataElement(tag, "SQ", Sequence([Dataset()]))
        elif (keyword_for_tag(tag) or "").endswith("CodeSequence"):
            self._codes(ds, tag, report)
        else:
            self._walk_items(ds[tag], subject, report)

    def _codes(self, ds: Dataset, tag: int, report: DeidReport) -> None:
        items = ds[tag].value or ()
        kept = [clean for item in items if (clean := clean_code_item(item)) is not None]
        dropped = len(items) - len(kept)
        if dropped:
            report.actions[("coded entry not in the vocabulary", "X")] += dropped
        ds[tag] = DataElement(tag, "SQ", Sequence(kept))

    def _keep_private(
        self, ds: Dataset, tag: int, subject: SubjectContext, report: DeidReport
    ) -> bool:
        if DeidOption.retain_safe_private not in self.options:
            return False
        creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8)
        creator_elem = ds.get_item(creator_tag)
        if creator_elem is None:
            return False
        creator = values.text_values(creator_elem)
        if len(creator) != 1:
            return False
        entry = self.allow_list.private.get((creator[0], tag & 0xFF))
        if entry is None or entry.vr is None:
            return False
        if not _reinterpret(ds, tag, entry.vr):
            return False
        return self._allowed(ds, tag, entry.vr, entry, subject, report)

    # -- allow-listed values ---------------------------------------------------------------

    def _allowed(
        self,
        ds: Dataset,
        tag: int,
        vr: str,
        entry: Entry,
        subject: SubjectContext,
        report: DeidReport,
    ) -> bool:
        """Apply an allow-list rule in place; False when the element must go."""
        rule = entry.rule
        if rule is Rule.walk:
            if vr != "SQ":
                return False
            self._walk_items(ds[tag], subject, report)
            return True
        if rule is Rule.codes:
            if vr != "SQ":
                return False
            self._codes(ds, tag, report)
            return True
        if rule is Rule.binary:
            # Lookup tables may be sent as US words or OW bytes: both are only numbers.
            return (vr in _BINARY_VRS and vr != "UN") or vr in _NUMBER_VRS
        if rule is Rule.number and vr in _NUMBER_VRS:
            return True
        elem = ds.get_item(tag)
        if elem is None or vr in _BINARY_VRS or vr in _NUMBER_VRS or vr == "SQ":
            return False
        texts = values.decoded_values(ds, tag)
        if texts is None:
            return False
        if rule is Rule.uid:
            if vr != "UI":
                return False
            already = self.rescrub is not None and not self.rescrub.remap_other_uids
            if DeidOption.retain_uids not in self.options and not already:
                mapped = [values.map_uid(self.pseudonymizer, v) for v in texts]
                if mapped != texts:
                    ds[tag] = DataElement(tag, vr, _join(mapped))
            return True
        if rule is Rule.date:
            return self._allowed_date(ds, tag, vr, texts, subject)
        if rule is Rule.terms:
            kept = [v if entry.accepts_term(v) else "" for v in texts]
            if not any(kept):
                return False
            if kept != texts:
                ds[tag] = DataElement(tag, vr, _join(kept))
            return True
        return values.passes(rule, entry, vr, texts)

    def _allowed_date(
        self, ds: Dataset, tag: int, vr: str, texts: list[str], subject: SubjectContext
    ) -> bool:
        if vr not in ("DA", "DT"):
            return False
        if self._unknown_dates is Action.keep:
            check = shift_date if vr == "DA" else shift_datetime
            if all(check(v, dt.timedelta()) for v in texts if v):
                return True
            new_values: list[str] | None = self._dummy(texts, vr)
        elif self._unknown_dates is Action.shift:
            new_values = self._shift(texts, vr, subject)
        else:
            new_values = self._dummy(texts, vr)
        if new_values is not None:
            ds[tag] = DataElement(tag, vr, _join(new_values))
        return True

    # -- table actions ---------------------------------------------------------------------

    def _transform(
        self, ds: Dataset, tag: int, vr: str, action: Action, subject: SubjectContext
    ) -> None:
        # Work on the stored text where possible: converting every element through pydicom
        # costs more than the rest of the de-identification together.
        original = ds.get_item(tag)
        if original is None:
            return
        if vr in _BINARY_VRS or vr in _NUMBER_VRS:
            value = ds[tag].value
            if action is Action.zero:
                ds[tag] = DataElement(tag, vr, _empty_value(vr))
            elif value not in (None, b"", ""):
                ds[tag] = DataElement(tag, vr, _dummy_binary(value, vr))
            return
        texts = values.text_values(original)
        new_values: list[str] | None
        if action is Action.pseudonym:
            new_values = [subject.pseudonym]
        elif action is Action.zero:
            new_values = []
        elif action is Action.dummy:
            new_values = self._dummy(texts, vr)
        elif action is Action.uid:
            new_values = self._map_uids(texts) if vr == "UI" else self._dummy(texts, vr)
        elif action is Action.shift:
            new_values = self._shift(texts, vr, subject)
        elif action is Action.clean:
            decoded = values.decoded_values(ds, tag)
            clean = decoded is not None and values.all_clean(decoded)
            new_values = None if clean else self._dummy(texts, vr)
        else:
            new_values = None
        if new_values is not None:
            ds[tag] = DataElement(tag, vr, _join(new_values))

    def _keep_in_syntax(self, ds: Dataset, tag: int, vr: str) -> None:
        """K on a date, time, age or offset (the date options): kept only in its own syntax,
        so free text sent in such an element never passes as a date."""
        elem = ds.get_item(tag)
        texts = values.text_values(elem) if elem is not None else []
        if tag == _TIMEZONE_OFFSET:
            syntax: re.Pattern[str] | None = _KEPT_UNDER_SHIFT["SH"]
        else:
            syntax = _KEPT_UNDER_SHIFT.get(vr)
        if vr == "DA":
            ok = all(shift_date(v, dt.timedelta()) for v in texts if v)
        elif vr == "DT":
            ok = all(shift_datetime(v, dt.timedelta()) for v in texts if v)
        else:
            ok = syntax is not None and all(syntax.fullmatch(v.strip()) for v in texts if v)
        if not ok:
            ds[tag] = DataElement(tag, vr, _join(self._dummy(texts, vr)))

    def _map_uids(self, texts: list[str]) -> list[str]:
        if self.rescrub is not None:
            return texts  # table UIDs were pseudonymised when the instance was ingested
        return [self.pseudonymizer.uid(v) if v else v for v in texts]

    def _dummy(self, texts: list[str], vr: str) -> list[str]:
        if not any(texts):
            return texts
        if vr == "UI":
            return self._map_uids(texts)
        return [_DUMMY_TEXT.get(vr, "ANONYMIZED")]

    def _shift(self, texts: list[str], vr: str, subject: SubjectContext) -> list[str] | None:
        if not any(texts):
            return None
        if vr not in ("DA", "DT"):
            # A whole-day shift leaves times, ages and offsets as they are, but only values
            # in their own syntax: free text in such an element is replaced.
            syntax = _KEPT_UNDER_SHIFT.get(vr)
            if syntax is not None and all(syntax.fullmatch(v.strip()) for v in texts if v):
                return None
            return self._dummy(texts, vr)
        shifter = shift_date if vr == "DA" else shift_datetime
        shifted = [shifter(v, subject.date_shift) if v else v for v in texts]
        if any(s is None for s in shifted):
            return [_DUMMY_TEXT[vr]]  # a date we cannot shift is not kept as it is
        return [s or "" for s in shifted]

    # -- provenance ------------------------------------------------------------------------

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
        # LO holds 64 characters: the code sequence is the complete record of the options;
        # the allow-list's fingerprint says which allow-list (shipped and extension) applied.
        method = f"insitu E.1-1 allow-list {self.allow_list.fingerprint} {self.options.fingerprint}"
        return (
            DataElement(0x00120062, "CS", "YES"),
            DataElement(0x00120063, "LO", method[:64]),
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


def _vr_compatible(vr: str, tag: int) -> bool:
    """Whether ``vr`` is one of the dictionary's VRs for an ambiguous tag (US or SS, ...)."""
    try:
        return vr in str(dictionary_VR(tag)).split(" or ")
    except KeyError:
        return False


def _reinterpret(ds: Dataset, tag: int, vr: str) -> bool:
    """Re-read an element's bytes as ``vr``; False when its value is not available as bytes.

    UN and binary content is little endian; a sequence sent as UN is implicit VR (PS3.5 6.2.2).
    """
    elem = ds.get_item(tag)
    if elem is None:
        return False
    raw = elem.value
    if not isinstance(raw, bytes):
        return False
    implicit = True if vr == "SQ" else getattr(elem, "is_implicit_VR", True)
    little = getattr(elem, "is_little_endian", True)
    ds[tag] = RawDataElement(
        elem.tag, vr, len(raw), raw, 0, implicit, True if vr == "SQ" else little
    )
    try:
        ds[tag]
    except Exception:  # noqa: BLE001 - whatever the conversion raises, the element goes
        return False
    return True


def _join(texts: list[str]) -> str | None:
    return "\\".join(texts) if texts else None


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
