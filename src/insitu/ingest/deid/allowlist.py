"""The allow-list: what may stay outside Table E.1-1, and the rule each value must pass.

The shipped list is ``data/allow-list.toml`` (one entry per attribute, each with a reason); a
deployment extends it with a file of its own. The CS vocabularies come from
``data/cs-terms.json``, extracted from the DICOM standard by ``scripts/extract_cs_terms.py``.
Nothing is downloaded at run time.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword


class Rule(enum.StrEnum):
    """How an allow-listed value is checked before it is kept."""

    number = "number"
    binary = "binary"
    terms = "terms"
    vocabulary = "vocabulary"
    technical = "technical"
    descriptor = "descriptor"
    pattern = "pattern"
    uid = "uid"
    date = "date"
    walk = "walk"
    codes = "codes"


# Which VRs each rule may be used with: an entry that breaks this is refused at load time.
_RULE_VRS: dict[Rule, frozenset[str]] = {
    Rule.number: frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "DS", "IS"}),
    Rule.binary: frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "US"}),
    Rule.terms: frozenset({"CS"}),
    Rule.vocabulary: frozenset({"CS", "LO", "SH"}),
    Rule.technical: frozenset({"LO", "SH", "CS"}),
    Rule.descriptor: frozenset({"LO", "SH", "ST", "LT", "CS"}),
    Rule.pattern: frozenset({"CS", "SH", "LO"}),
    Rule.uid: frozenset({"UI"}),
    Rule.date: frozenset({"DA", "DT"}),
    Rule.walk: frozenset({"SQ"}),
    Rule.codes: frozenset({"SQ"}),
}


class AllowListError(ValueError):
    """An allow-list file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Entry:
    """One allow-listed attribute (or VR default, or safe private element)."""

    label: str
    rule: Rule
    terms: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None
    vr: str | None = None
    """For safe private elements: the VR their bytes are read as."""

    def accepts_term(self, value: str) -> bool:
        """Whether a CS or vocabulary value is on this entry's vocabulary."""
        return _normal(value) in self.terms


@dataclass(frozen=True)
class AllowList:
    """The merged allow-list of a deployment; picklable, shared by every worker."""

    attributes: Mapping[int, Entry]
    defaults: Mapping[str, Entry]
    private: Mapping[tuple[str, int], Entry]
    fingerprint: str
    version: str
    sources: tuple[str, ...] = field(default=())

    def entry(self, tag: int, vr: str) -> Entry | None:
        """The entry for a dictionary attribute, else the default for its VR, else None."""
        found = self.attributes.get(tag)
        if found is not None:
            return found
        return self.defaults.get(vr)


def _normal(value: str) -> str:
    return " ".join(value.upper().split())


@cache
def cs_terms() -> Mapping[str, frozenset[str]]:
    """Defined Terms and Enumerated Values of every CS attribute, by keyword."""
    text = (resources.files("insitu.ingest.deid") / "data" / "cs-terms.json").read_text()
    return {k: frozenset(v) for k, v in json.loads(text).items()}


def _dictionary_vr(keyword: str, where: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise AllowListError(f"{where}: {keyword!r} is not a DICOM keyword; check the spelling")
    vr = str(dictionary_VR(tag))
    return tag, vr


def _entry(label: str, spec: Any, where: str, vrs: set[str]) -> Entry:
    if not isinstance(spec, dict) or "rule" not in spec:
        raise AllowListError(
            f"{where}: entry {label} needs a table with a rule, e.g. {{ rule = ... }}"
        )
    try:
        rule = Rule(spec["rule"])
    except ValueError:
        valid = ", ".join(r.value for r in Rule)
        raise AllowListError(
            f"{where}: entry {label} has unknown rule {spec['rule']!r}; use: {valid}"
        ) from None
    if not str(spec.get("why", "")).strip():
        raise AllowListError(f'{where}: entry {label} needs a why = "..." saying why it is safe')
    if not vrs & _RULE_VRS[rule]:
        raise AllowListError(
            f"{where}: entry {label} (VR {'/'.join(sorted(vrs))}) cannot use rule {rule.value}"
        )
    terms = frozenset(_normal(str(t)) for t in spec.get("terms", ()))
    pattern = None
    if rule is Rule.pattern:
        if not spec.get("pattern"):
            raise AllowListError(f"{where}: entry {label} uses rule pattern but has no pattern")
        pattern = re.compile(str(spec["pattern"]))
    if rule is Rule.vocabulary and not terms:
        raise AllowListError(f"{where}: entry {label} uses rule vocabulary but lists no terms")
    return Entry(label=label, rule=rule, terms=terms, pattern=pattern, vr=spec.get("vr"))


def _parse(
    text: str, where: str
) -> tuple[dict[int, Entry], dict[str, Entry], dict[tuple[str, int], Entry], str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AllowListError(f"{where}: not valid TOML: {exc}") from None
    attributes: dict[int, Entry] = {}
    for keyword, spec in (data.get("attributes") or {}).items():
        tag, vr = _dictionary_vr(keyword, where)
        vrs = set(vr.replace(" or ", " ").split())
        entry = _entry(keyword, spec, where, vrs)
        if entry.rule is Rule.terms:
            extracted = cs_terms().get(keyword, frozenset())
            entry = Entry(keyword, entry.rule, entry.terms | extracted, entry.pattern)
            if not entry.terms:
                raise AllowListError(
                    f"{where}: entry {keyword} uses rule terms, but the standard lists no terms "
                    "for it; give terms = [...]"
                )
        attributes[tag] = entry
    defaults: dict[str, Entry] = {}
    for vr, spec in (data.get("defaults") or {}).items():
        defaults[vr] = _entry(f"default for VR {vr}", spec, where, {vr})
    private: dict[tuple[str, int], Entry] = {}
    for creator, elements in (data.get("private") or {}).items():
        for byte, spec in (elements or {}).items():
            label = f"private {creator!r} {byte}"
            try:
                element = int(byte, 16)
            except ValueError:
                raise AllowListError(
                    f'{where}: {label}: the element byte must be hex, e.g. "0C"'
                ) from None
            if not isinstance(spec, dict) or not spec.get("vr"):
                raise AllowListError(f'{where}: {label} needs vr = ".." (how to read its value)')
            private[(creator.rstrip(), element)] = _entry(label, spec, where, {str(spec["vr"])})
    return attributes, defaults, private, str(data.get("version", ""))


def _shipped_text() -> str:
    return (resources.files("insitu.ingest.deid") / "data" / "allow-list.toml").read_text()


def load_allow_list(extra: Path | None = None) -> AllowList:
    """The shipped allow-list, extended (entry by entry) by a deployment's own file."""
    shipped = _shipped_text()
    attributes, defaults, private, version = _parse(shipped, "allow-list.toml (shipped)")
    digest = hashlib.sha256(shipped.encode())
    sources = ["shipped"]
    if extra is not None:
        try:
            text = extra.read_text()
        except OSError as exc:
            raise AllowListError(
                f"{extra}: cannot read the allow-list extension: {exc.strerror}"
            ) from None
        more_attributes, more_defaults, more_private, _ = _parse(text, str(extra))
        attributes.update(more_attributes)
        defaults.update(more_defaults)
        private.update(more_private)
        digest.update(b"\0" + text.encode())
        sources.append(str(extra))
    return AllowList(
        attributes=attributes,
        defaults=defaults,
        private=private,
        fingerprint=digest.hexdigest()[:12],
        version=version,
        sources=tuple(sources),
    )


@cache
def shipped_allow_list() -> AllowList:
    """The allow-list as shipped, without extensions (tests and defaults)."""
    return load_allow_list(None)
