"""Ingest commands: ``insitu ingest`` and ``insitu dicom listen`` (host), quarantine (client)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from insitu.cli.common import api_get, emit_json, fail, local_platform, settings_or_fail, stderr
from insitu.ingest import service
from insitu.ingest.clinical import ClinicalMapping, ClinicalMappingError
from insitu.ingest.deid.allowlist import AllowListError, load_allow_list
from insitu.ingest.deid.table import DeidOption, Options, OptionsError
from insitu.ingest.sources import count_sources, iter_sources

MAX_EXIT_STATUS = 100
OPTIONS_HELP = (
    "Comma-separated de-identification options (default: $INSITU_DEID_OPTIONS, "
    "retain-long-modified-dates). One of: " + ", ".join(o.value for o in DeidOption) + "; "
    "'none' for the Basic Profile alone."
)


def ingest_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="DICOM files, folders (walked recursively) and zip archives."),
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Site the data come from (pseudonyms are per site).")
    ] = None,
    clinical: Annotated[
        Path | None, typer.Option(help="Clinical data, CSV or JSON, keyed by Patient ID.")
    ] = None,
    clinical_map: Annotated[
        Path | None,
        typer.Option(help="Mapping (TOML/JSON): key column and the columns to keep."),
    ] = None,
    options: Annotated[str | None, typer.Option(help=OPTIONS_HELP)] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: CPU count).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the QA report as JSON.")
    ] = False,
) -> None:
    """De-identify and catalogue DICOM files, folders and zip archives, plus clinical data.

    Exit status: 0 when everything was ingested, otherwise the number of failed files and
    rows (capped at 100). Re-running the same command is safe and completes a killed batch.
    """
    paths = paths or []
    if not paths and clinical is None:
        fail("give at least one PATH or --clinical FILE")
    settings = settings_or_fail()
    try:
        deid_options = Options.parse(options if options is not None else settings.deid_options)
    except OptionsError as exc:
        fail(str(exc))
    try:
        load_allow_list(settings.deid_allow_list_extra)  # a bad extension stops before any work
    except AllowListError as exc:
        fail(f"{exc} (setting INSITU_DEID_ALLOW_LIST_EXTRA)")
    mapping = None
    if clinical is not None:
        if clinical_map is None:
            fail("--clinical needs --clinical-map FILE naming the key column and kept columns")
        if not clinical.is_file():
            fail(f"{clinical}: no such clinical data file")
        try:
            mapping = ClinicalMapping.load(clinical_map)
        except ClinicalMappingError as exc:
            fail(str(exc))
    with local_platform(settings) as platform:
        total = count_sources(paths)
        progress = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TimeRemainingColumn(),
            console=stderr,
            transient=json_output,
        )
        with progress:
            task = progress.add_task("ingest", total=total)
            try:
                result = service.ingest(
                    platform,
                    iter_sources(paths, exclude=settings.home),
                    site=site or settings.site,
                    options=deid_options,
                    workers=workers or settings.ingest_workers,
                    clinical=(clinical, mapping) if clinical and mapping else None,
                    on_progress=lambda n: progress.advance(task, n),
                    start_method="fork",
                )
            except ClinicalMappingError as exc:
                fail(str(exc))
    if json_output:
        emit_json({**result.report, "failures_with_paths": result.failures})
    else:
        _print_summary(result)
    if result.failed:
        raise typer.Exit(min(result.failed, MAX_EXIT_STATUS))


def _print_summary(result: service.IngestResult) -> None:
    counts = result.report["counts"]
    throughput = result.report["throughput"]
    for failure in result.failures:
        stderr.print(f"[red]failed[/red] {failure['path']}: {failure['reason']}", highlight=False)
    table = Table(title=f"ingest batch {result.batch_id}", show_header=False)
    for key in ("files", "ingested", "duplicates", "quarantined", "failed", "clinical_rows"):
        table.add_row(key, str(counts[key]))
    table.add_row("seconds", str(throughput["seconds"]))
    table.add_row("files/s", str(throughput["files_per_second"]))
    stderr.print(table)
    for item in result.report["quarantined"][:20]:
        stderr.print(f"[yellow]quarantined[/yellow] {item['sop_instance_uid']}: {item['reason']}")


def dicom_listen(
    ae_title: Annotated[str, typer.Option(help="Our AE title.")] = "INSITU",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 11112,
    site: Annotated[str | None, typer.Option(help="Site of the received data.")] = None,
    calling_ae: Annotated[
        list[str] | None,
        typer.Option(
            help="Accepted calling AE title (repeat); default $INSITU_ALLOWED_CALLING_AE_TITLES."
        ),
    ] = None,
    options: Annotated[str | None, typer.Option(help=OPTIONS_HELP)] = None,
    queue_mb: Annotated[
        int,
        typer.Option(
            min=1,
            help="Memory for received instances waiting for de-identification, in MiB; "
            "senders are slowed down (then answered 'out of resources') beyond it.",
        ),
    ] = 1024,
    max_associations: Annotated[
        int, typer.Option(min=1, help="Open associations at once; more are rejected as busy.")
    ] = 16,
) -> None:
    """Receive DICOM C-STORE (and C-ECHO) and feed it into the same de-identifying ingest.

    Only associations addressed to --ae-title from an allowed calling AE title are accepted.
    Received instances stay in memory until de-identified; nothing identifying is written.
    """
    import logging

    from insitu.ingest.listener import DicomListener, check_ae_title

    settings = settings_or_fail()
    allowed = calling_ae or [a for a in settings.allowed_calling_ae_titles.split(",") if a.strip()]
    if not allowed:
        fail(
            "no calling AE title is allowed: pass --calling-ae TITLE or set "
            "INSITU_ALLOWED_CALLING_AE_TITLES"
        )
    for title, what in [(ae_title, "--ae-title"), *((a, "calling AE title") for a in allowed)]:
        problem = check_ae_title(title)
        if problem:
            fail(f"{what} {title!r}: {problem}")
    try:
        deid_options = Options.parse(options if options is not None else settings.deid_options)
    except OptionsError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with local_platform(settings) as platform:
        listener = DicomListener(
            platform,
            ae_title=ae_title,
            allowed_calling=allowed,
            site=site or settings.site,
            options=deid_options,
            workers=settings.ingest_workers,
            queue_bytes=queue_mb * 1024 * 1024,
            max_associations=max_associations,
        )
        stderr.print(f"listening for C-STORE as {ae_title} on {host}:{port}; Ctrl-C to stop")
        listener.serve(host, port)


quarantine_app = typer.Typer(help="Instances held back for review.", no_args_is_help=True)


@quarantine_app.command("list")
def quarantine_list(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List quarantined instances and why (steward role)."""
    data = api_get("/quarantine", {"limit": limit})
    if json_output:
        emit_json(data)
        return
    table = Table("subject", "modality", "SOP Instance UID", "reason")
    for item in data["items"]:
        table.add_row(
            item["subject"], item["modality"] or "", item["sop_instance_uid"], item["reason"]
        )
    stderr.print(table)
