"""The PS3.15 Annex E Table E.1-1 and the options that modify it.

The table ships with the package (``data/ps3.15-table-e1-1.json``, see ``data/ATTRIBUTION.md``)
and is the only source of per-attribute actions: nothing here restates it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources


class Action(enum.StrEnum):
    """What happens to one attribute. Letters follow PS3.15 Table E.1-1."""

    remove = "X"
    zero = "Z"
    dummy = "D"
    uid = "U"
    keep = "K"
    clean = "C"
    shift = "S"
    """Our spelling of C under the Modified Dates option: the subject's secret date shift."""
    pseudonym = "P"
    """Patient ID and Name become the subject pseudonym (a D with a consistent value)."""
    allowed = "A"
    """Not in the table, on the allow-list: kept after its value passed the entry's rule."""


class DeidOption(enum.StrEnum):
    """The option columns of Table E.1-1. Values are the names ``--options`` accepts."""

    retain_safe_private = "retain-safe-private"
    retain_uids = "retain-uids"
    retain_device_identity = "retain-device-identity"
    retain_institution_identity = "retain-institution-identity"
    retain_patient_characteristics = "retain-patient-characteristics"
    retain_long_full_dates = "retain-long-full-dates"
    retain_long_modified_dates = "retain-long-modified-dates"
    clean_descriptors = "clean-descriptors"
    clean_structured_content = "clean-structured-content"
    clean_graphics = "clean-graphics"

    @property
    def column(self) -> str:
        """The option's column name in the JSON table."""
        return _COLUMNS[self]

    @property
    def code(self) -> tuple[str, str]:
        """The CID 7050 code (value, meaning) recorded in each output instance."""
        return _CODES[self]


_COLUMNS = {
    DeidOption.retain_safe_private: "rtnSafePrivOpt",
    DeidOption.retain_uids: "rtnUIDsOpt",
    DeidOption.retain_device_identity: "rtnDevIdOpt",
    DeidOption.retain_institution_identity: "rtnInstIdOpt",
    DeidOption.retain_patient_characteristics: "rtnPatCharsOpt",
    DeidOption.retain_long_full_dates: "rtnLongFullDatesOpt",
    DeidOption.retain_long_modified_dates: "rtnLongModifDatesOpt",
    DeidOption.clean_descriptors: "cleanDescOpt",
    DeidOption.clean_structured_content: "cleanStructContOpt",
    DeidOption.clean_graphics: "cleanGraphOpt",
}

BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
_CODES = {
    DeidOption.clean_graphics: ("113103", "Clean Graphics Option"),
    DeidOption.clean_structured_content: ("113104", "Clean Structured Content Option"),
    DeidOption.clean_descriptors: ("113105", "Clean Descriptors Option"),
    DeidOption.retain_long_full_dates: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    DeidOption.retain_long_modified_dates: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    DeidOption.retain_patient_characteristics: ("113108", "Retain Patient Characteristics Option"),
    DeidOption.retain_device_identity: ("113109", "Retain Device Identity Option"),
    DeidOption.retain_uids: ("113110", "Retain UIDs Option"),
    DeidOption.retain_safe_private: ("113111", "Retain Safe Private Option"),
    DeidOption.retain_institution_identity: ("113112", "Retain Institution Identity Option"),
}

# Aliases so that the JSON column names (with or without "Opt") work on the command line too.
_ALIASES: dict[str, DeidOption] = {}
for _option in DeidOption:
    _ALIASES[_option.value] = _option
    _ALIASES[_option.column.lower()] = _option
    _ALIASES[_option.column.removesuffix("Opt").lower()] = _option

# Combined Basic Profile actions resolve to the choice that keeps the file valid, because we
# do not ship the IOD type tables that would pick per attribute.
_COMBINED = {
    "X/Z": Action.zero,
    "Z/D": Action.dummy,
    "X/D": Action.dummy,
    "X/Z/D": Action.dummy,
    "X/Z/U*": Action.uid,
}

PRIVATE_ROW_ID = "ggggeeee-where-gggg-is-odd"


class OptionsError(ValueError):
    """An ``--options`` value that names no option, or options that exclude each other."""


@dataclass(frozen=True)
class Options:
    """A validated, ordered set of de-identification options."""

    enabled: frozenset[DeidOption]

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> Options:
        """Parse a comma-separated list (or iterable) of option names."""
        names = text.split(",") if isinstance(text, str) else list(text)
        enabled: set[DeidOption] = set()
        for raw in names:
            name = raw.strip().lower()
            if not name or name == "none":
                continue
            option = _ALIASES.get(name)
            if option is None:
                valid = ", ".join(o.value for o in DeidOption)
                raise OptionsError(
                    f"unknown de-identification option {raw.strip()!r}; use: {valid}"
                )
            enabled.add(option)
        if {DeidOption.retain_long_full_dates, DeidOption.retain_long_modified_dates} <= enabled:
            raise OptionsError(
                "options retain-long-full-dates and retain-long-modified-dates exclude each "
                "other: choose one"
            )
        return cls(frozenset(enabled))

    @property
    def fingerprint(self) -> str:
        """A stable text form, stored with each instance to detect re-ingest conflicts."""
        return ",".join(sorted(o.value for o in self.enabled)) or "basic"

    def __contains__(self, option: object) -> bool:
        return option in self.enabled


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1."""

    id: str
    name: str
    tag: str
    basic: str
    options: Mapping[str, str]


@cache
def load_table() -> tuple[Row, ...]:
    """All rows of the shipped table."""
    text = (resources.files("insitu.ingest.deid") / "data" / "ps3.15-table-e1-1.json").read_text()
    rows = []
    for item in json.loads(text):
        opts = {k: v for k, v in item.items() if k.endswith("Opt")}
        rows.append(
            Row(
                id=item["id"].lower(),
                name=item["name"],
                tag=item["tag"],
                basic=item["basicProfile"],
                options=opts,
            )
        )
    return tuple(rows)


def resolve_action(row: Row, options: Options) -> Action:
    """The action for a row under the given options.

    Date options decide for date rows first (so a retained device identity never un-shifts a
    date); among the other enabled options, keeping beats cleaning; otherwise the Basic
    Profile action applies, combined actions resolved as documented in ``_COMBINED``.
    """
    if DeidOption.retain_long_full_dates in options and row.options.get("rtnLongFullDatesOpt"):
        return Action.keep
    if DeidOption.retain_long_modified_dates in options and row.options.get("rtnLongModifDatesOpt"):
        return Action.shift
    chosen = {
        row.options[o.column]
        for o in options.enabled
        if o.column in row.options
        and o not in (DeidOption.retain_long_full_dates, DeidOption.retain_long_modified_dates)
    }
    if "K" in chosen:
        return Action.keep
    if "C" in chosen:
        return Action.clean
    if row.basic in _COMBINED:
        return _COMBINED[row.basic]
    return Action(row.basic)


@dataclass(frozen=True)
class ResolvedProfile:
    """Table E.1-1 resolved for one set of options, indexed for per-element lookup."""

    options: Options
    exact: Mapping[int, tuple[Row, Action]]
    curve: tuple[Row, Action]
    overlay: Mapping[int, tuple[Row, Action]]
    private: tuple[Row, Action]

    def lookup(self, tag: int) -> tuple[Row, Action] | None:
        """The table row and action for a tag, including the repeating groups."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        group = tag >> 16
        if group & 0xFF01 == 0x5000:
            return self.curve
        if group & 0xFF01 == 0x6000:
            return self.overlay.get(tag & 0xFFFF)
        return None


@cache
def resolve_profile(options: Options) -> ResolvedProfile:
    """Resolve every row of the table for ``options`` once."""
    exact: dict[int, tuple[Row, Action]] = {}
    overlay: dict[int, tuple[Row, Action]] = {}
    curve: tuple[Row, Action] | None = None
    private: tuple[Row, Action] | None = None
    for row in load_table():
        action = resolve_action(row, options)
        if row.id == PRIVATE_ROW_ID:
            private = (row, action)
        elif row.id.startswith("50xx"):
            curve = (row, action)
        elif row.id.startswith("60xx"):
            overlay[int(row.id[4:], 16)] = (row, action)
        else:
            exact[int(row.id, 16)] = (row, action)
    if curve is None or private is None:
        raise RuntimeError("Table E.1-1 is missing its curve or private-attribute row")
    return ResolvedProfile(options, exact, curve, overlay, private)
