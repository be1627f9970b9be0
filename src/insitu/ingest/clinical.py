"""Clinical data import: CSV or JSON rows keyed by the original Patient ID.

A mapping file names the key column and the columns to keep; everything else is dropped. The
key becomes the subject pseudonym (the same one the images get) and date columns get the
subject's date shift. Deny by default, as for the images: a text column is kept only with a
rule for its values (a list of allowed values, or a whole-value pattern), since free text is
where names and phone numbers hide. Errors name the row and column, never the value.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insitu.ingest.pseudonyms import Pseudonymizer

COLUMN_TYPES = ("str", "int", "float", "date", "bool")
_TEXT_RULE_HINT = (
    'a text column needs a rule: values = ["I", "II", ...] (the allowed values) or '
    'pattern = "[A-Z][0-9]{2}" (a whole-value regular expression)'
)
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y")


class ClinicalMappingError(ValueError):
    """The mapping file is unusable; the message names the field."""


@dataclass(frozen=True)
class ColumnMap:
    """One kept column: output name, source column, type."""

    name: str
    column: str
    type: str
    values: frozenset[str] | None = None
    """For text columns: the only values kept."""
    pattern: re.Pattern[str] | None = None
    """For text columns: a whole-value pattern the value must match."""


@dataclass(frozen=True)
class ClinicalMapping:
    """Which column is the key and which columns are kept."""

    key: str
    columns: tuple[ColumnMap, ...]

    @classmethod
    def load(cls, path: Path) -> ClinicalMapping:
        """Read a TOML or JSON mapping file."""
        try:
            text = path.read_text(encoding="utf-8")
            raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise ClinicalMappingError(f"{path}: cannot read the mapping: {exc}") from exc
        key = raw.get("key")
        if not isinstance(key, str) or not key:
            raise ClinicalMappingError(f"{path}: field 'key' (the patient ID column) is missing")
        columns_raw = raw.get("columns")
        if not isinstance(columns_raw, dict) or not columns_raw:
            raise ClinicalMappingError(
                f"{path}: table 'columns' is missing: list the columns to keep, "
                'e.g. columns.sex = "sex" or columns.age = {column = "age_years", type = "int"}'
            )
        columns = []
        for name, spec in columns_raw.items():
            if isinstance(spec, str):
                raise ClinicalMappingError(
                    f"{path}: columns.{name} = {spec!r} keeps free text; {_TEXT_RULE_HINT}, "
                    f'e.g. columns.{name} = {{ column = "{spec}", values = [...] }}'
                )
            if not isinstance(spec, dict) or not isinstance(spec.get("column"), str):
                raise ClinicalMappingError(f"{path}: columns.{name} needs a 'column' name")
            kind = spec.get("type", "str")
            if kind not in COLUMN_TYPES:
                raise ClinicalMappingError(
                    f"{path}: columns.{name}.type {kind!r} is not one of {', '.join(COLUMN_TYPES)}"
                )
            columns.append(_column(path, name, spec, kind))
        if any(c.column == key for c in columns):
            raise ClinicalMappingError(f"{path}: the key column {key!r} cannot also be kept")
        return cls(key=key, columns=tuple(columns))


def _column(path: Path, name: str, spec: dict[str, Any], kind: str) -> ColumnMap:
    values, pattern = spec.get("values"), spec.get("pattern")
    if kind != "str":
        return ColumnMap(name, spec["column"], kind)
    if values is None and pattern is None:
        raise ClinicalMappingError(f"{path}: columns.{name}: {_TEXT_RULE_HINT}")
    if values is not None and (
        not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values)
    ):
        raise ClinicalMappingError(f"{path}: columns.{name}.values must be a list of strings")
    compiled = None
    if pattern is not None:
        try:
            compiled = re.compile(str(pattern))
        except re.error as exc:
            raise ClinicalMappingError(f"{path}: columns.{name}.pattern: {exc}") from None
    return ColumnMap(
        name,
        spec["column"],
        kind,
        frozenset(values) if values is not None else None,
        compiled,
    )


@dataclass(frozen=True)
class ClinicalRow:
    """A parsed row, or the reason it could not be parsed."""

    number: int
    pseudonym: str | None = None
    data: dict[str, Any] | None = None
    error: str | None = None


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Raw rows of a CSV or JSON (list of objects) file, numbered from 1."""
    if path.suffix.lower() == ".json":
        items = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(items, list):
            raise ClinicalMappingError(f"{path}: a JSON clinical file must be a list of objects")
        for number, item in enumerate(items, start=1):
            yield number, item if isinstance(item, dict) else {"__invalid__": True}
        return
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            yield number, row


def _convert(value: Any, column: ColumnMap, shift: dt.timedelta) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    kind = column.type
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "y"):
            return True
        if lowered in ("0", "false", "no", "n"):
            return False
        raise ValueError("not a boolean")
    if kind == "date":
        for fmt in _DATE_FORMATS:
            try:
                day = dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC).date()
            except ValueError:
                continue
            return (day + shift).isoformat()
        raise ValueError("not a date (use YYYY-MM-DD)")
    if column.values is not None and text not in column.values:
        raise ValueError("not one of the column's allowed values")
    if column.pattern is not None and not column.pattern.fullmatch(text):
        raise ValueError("not matching the column's pattern")
    return text


def parse_rows(
    path: Path, mapping: ClinicalMapping, site: str, pseudonymizer: Pseudonymizer
) -> Iterator[ClinicalRow]:
    """Pseudonymised, mapped rows; a bad row is reported and the rest go on."""
    for number, raw in read_rows(path):
        if raw.get("__invalid__"):
            yield ClinicalRow(number, error=f"row {number}: not an object")
            continue
        key = str(raw.get(mapping.key) or "").strip()
        if not key:
            yield ClinicalRow(number, error=f"row {number}: key column {mapping.key!r} is empty")
            continue
        shift = pseudonymizer.date_shift(site, key)
        data: dict[str, Any] = {}
        error = None
        for column in mapping.columns:
            if column.column not in raw:
                error = f"row {number}: column {column.column!r} is missing"
                break
            try:
                data[column.name] = _convert(raw[column.column], column, shift)
            except ValueError as exc:
                # The reason names the rule, never the value (which may be what leaks).
                reason = exc.args[0] if column.type == "str" else f"not a valid {column.type}"
                error = f"row {number}: column {column.column!r} is {reason}"
                break
        if error:
            yield ClinicalRow(number, error=error)
            continue
        yield ClinicalRow(number, pseudonym=pseudonymizer.subject(site, key), data=data)
