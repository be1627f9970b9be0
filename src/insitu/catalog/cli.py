"""``insitu catalog search`` (client of the API, steward role)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from insitu.cli.common import api_get, emit_json

catalog_app = typer.Typer(help="Search the catalogue of de-identified data.", no_args_is_help=True)


@catalog_app.command("search")
def search(
    modality: Annotated[str | None, typer.Option(help="e.g. CT, MR.")] = None,
    body_part: Annotated[str | None, typer.Option(help="Body Part Examined, e.g. CHEST.")] = None,
    manufacturer: Annotated[str | None, typer.Option(help="Substring of the manufacturer.")] = None,
    subject: Annotated[str | None, typer.Option(help="Subject pseudonym.")] = None,
    date_from: Annotated[
        str | None, typer.Option(help="Study date from (YYYYMMDD, shifted).")
    ] = None,
    date_to: Annotated[str | None, typer.Option(help="Study date to (YYYYMMDD, shifted).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find series in the catalogue."""
    data = api_get(
        "/catalog/series",
        {
            "modality": modality,
            "body_part": body_part,
            "manufacturer": manufacturer,
            "subject": subject,
            "study_date_from": date_from,
            "study_date_to": date_to,
            "limit": limit,
        },
    )
    if json_output:
        emit_json(data)
        return
    table = Table(
        "subject",
        "study date",
        "modality",
        "body part",
        "series",
        "instances",
        title=f"{data['total']} series",
    )
    for item in data["items"]:
        table.add_row(
            item["subject"],
            item["study_date"] or "",
            item["modality"] or "",
            item["body_part_examined"] or "",
            item["series_instance_uid"],
            str(item["instances"]),
        )
    Console().print(table)
