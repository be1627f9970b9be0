"""Clinical data import: CSV or JSON rows keyed by the original Patient ID.

A mapping file names the key column and the columns to keep; everything else is dropped. The
key becomes the subject pseudonym (the same one the images get) and date columns get the
subject's date shift. Errors name the row and column, never the value.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insitu.ingest.pseudonyms import Pseudonymizer

COLUMN_TYPES = ("str", "int", "float", "date", "bool")
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y")


class ClinicalMappingError(ValueError):
    """The mapping file is unusable; the message names the field."""


@dataclass(frozen=True)
class ColumnMap:
    """One kept column: output name, source column, type."""

    name: str
    column: str
    type: str


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
                columns.append(ColumnMap(name, spec, "str"))
                continue
            if not isinstance(spec, dict) or not isinstance(spec.get("column"), str):
                raise ClinicalMappingError(f"{path}: columns.{name} needs a 'column' name")
            kind = spec.get("type", "str")
            if kind not in COLUMN_TYPES:
                raise ClinicalMappingError(
                    f"{path}: columns.{name}.type {kind!r} is not one of {', '.join(COLUMN_TYPES)}"
                )
            columns.append(ColumnMap(name, spec["column"], kind))
        if any(c.column == key for c in columns):
            raise ClinicalMappingError(f"{path}: the key column {key!r} cannot also be kept")
        return cls(key=key, columns=tuple(columns))


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


def _convert(value: Any, kind: str, shift: dt.timedelta) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
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
                data[column.name] = _convert(raw[column.column], column.type, shift)
            except ValueError:
                error = f"row {number}: column {column.column!r} is not a valid {column.type}"
                break
        if error:
            yield ClinicalRow(number, error=error)
            continue
        yield ClinicalRow(number, pseudonym=pseudonymizer.subject(site, key), data=data)
