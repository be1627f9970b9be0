"""Ingest commands: ``insitu ingest`` and ``insitu dicom listen`` (host), quarantine (client)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer._click.core import Context
from typer.core import TyperGroup

from insitu.cli.common import (
    api_get,
    api_request,
    emit_json,
    fail,
    local_platform,
    settings_or_fail,
    stderr,
)
from insitu.ingest import service
from insitu.ingest.clinical import ClinicalMapping, ClinicalMappingError
from insitu.ingest.deid.allowlist import AllowListError, load_allow_list
from insitu.ingest.deid.ocr import OcrUnavailableError, TesseractDetector
from insitu.ingest.deid.table import DeidOption, Options, OptionsError
from insitu.ingest.sources import count_sources, iter_sources
from insitu.settings import Settings

MAX_EXIT_STATUS = 100
OPTIONS_HELP = (
    "Comma-separated de-identification options (default: $INSITU_DEID_OPTIONS, "
    "retain-long-modified-dates). One of: " + ", ".join(o.value for o in DeidOption) + "; "
    "'none' for the Basic Profile alone."
)


class _IngestGroup(TyperGroup):
    """``insitu ingest PATH...`` runs ``insitu ingest files PATH...``: the subcommands
    (``rescrub``) are named first; anything else is the files' arguments."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["files", *args]
        return super().parse_args(ctx, args)


ingest_app = typer.Typer(
    cls=_IngestGroup,
    help="De-identify and catalogue DICOM (insitu ingest PATH...), or re-scrub what is stored.",
    no_args_is_help=True,
)


def _progress(label: str, unit: str, *, transient: bool) -> Progress:
    """The progress bar of a long host command, on stderr (gone when JSON is printed)."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
    )


def _check_deid_settings(settings: Settings) -> None:
    """Stop before any work on a bad allow-list extension or a missing OCR engine."""
    try:
        load_allow_list(settings.deid_allow_list_extra)
    except AllowListError as exc:
        fail(f"{exc} (setting INSITU_DEID_ALLOW_LIST_EXTRA)")
    if settings.ocr == "tesseract":
        try:
            TesseractDetector()
        except OcrUnavailableError as exc:
            fail(str(exc))


@ingest_app.command("files")
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
    _check_deid_settings(settings)
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
        progress = _progress("ingest", "files", transient=json_output)
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


@ingest_app.command("rescrub")
def rescrub_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Do the work and report; store nothing.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: CPU count).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-apply the current de-identification engine and allow-list to every stored instance
    de-identified under older ones (host command).

    New blobs are written and catalogue fields the rules no longer keep are purged; released
    dataset versions holding a changed series are invalidated ("re-de-identified") and get a
    new draft version for their stewards to release. Recorded in the ledger.
    """
    from insitu.ingest.rescrub import rescrub

    settings = settings_or_fail()
    _check_deid_settings(settings)
    with local_platform(settings) as platform:
        progress = _progress("rescrub", "instances", transient=json_output)
        with progress:
            task = progress.add_task("rescrub", total=None)
            report = rescrub(
                platform,
                dry_run=dry_run,
                workers=workers or settings.ingest_workers,
                on_total=lambda n: progress.update(task, total=n),
                on_progress=lambda n: progress.advance(task, n),
                start_method="fork",
            )
    data = report.as_dict()
    if json_output:
        emit_json(data)
    else:
        verb = "would be" if dry_run else "were"
        stderr.print(
            f"{data['checked']} stored instances: {data['up_to_date']} up to date, "
            f"{data['rewritten']} {verb} de-identified again, {data['moved_to_quarantine']} "
            f"{verb} moved to the quarantine, {len(data['failed'])} failed"
        )
        for label, count in list(data["removed_or_changed"].items())[:15]:
            stderr.print(f"  {label}: {count}")
        for old, new in zip(data["invalidated"], data["new_versions"], strict=True):
            stderr.print(f"  dataset {old} invalidated (re-de-identified); draft {new} made")
        for failure in data["failed"][:20]:
            stderr.print(f"[red]failed[/red] {failure['sop_instance_uid']}: {failure['reason']}")
    if report.failed:
        raise typer.Exit(min(len(report.failed), MAX_EXIT_STATUS))


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
    _check_deid_settings(settings)
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


quarantine_app = typer.Typer(
    help="Instances held back because their pixels may show identity: review them in bulk.",
    no_args_is_help=True,
)
ReasonOption = Annotated[
    str | None,
    typer.Option(
        "--reason",
        help="Reason code: burned-in-yes, burned-in-absent, ocr-text, text-check-failed, "
        "pixels-unchecked.",
    ),
]
SeriesOption = Annotated[
    str | None, typer.Option("--series", help="Series Instance UID (as catalogued).")
]
BatchOption = Annotated[int | None, typer.Option("--batch", min=1, help="Ingest batch id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@quarantine_app.command("list")
def quarantine_list(
    reason: ReasonOption = None,
    series: SeriesOption = None,
    batch: BatchOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    json_output: JsonOption = False,
) -> None:
    """List quarantined instances and why, newest first (steward role)."""
    params = {
        "limit": limit,
        "reason_code": reason,
        "series_instance_uid": series,
        "batch_id": batch,
    }
    data = api_get("/quarantine", params)
    if json_output:
        emit_json(data)
        return
    table = Table("subject", "modality", "SOP Instance UID", "reason code", "reason")
    for item in data["items"]:
        table.add_row(
            item["subject"],
            item["modality"] or "",
            item["sop_instance_uid"],
            item["reason_code"],
            item["reason"],
        )
    stderr.print(table)


@quarantine_app.command("summary")
def quarantine_summary(json_output: JsonOption = False) -> None:
    """The quarantine by reason and by series: what to decide on in bulk (steward role)."""
    data = api_get("/quarantine/summary")
    if json_output:
        emit_json(data)
        return
    reasons = Table("reason code", "instances", "meaning", title=f"{data['total']} quarantined")
    for row in data["reasons"]:
        reasons.add_row(row["reason_code"], str(row["count"]), row["meaning"])
    stderr.print(reasons)
    series = Table("Series Instance UID", "reason code", "subject", "modality", "instances")
    for row in data["series"]:
        series.add_row(
            row["series_instance_uid"],
            row["reason_code"],
            row["subject"],
            row["modality"] or "",
            str(row["count"]),
        )
    stderr.print(series)


def _decide(
    decision: str,
    reason: str | None,
    series: str | None,
    batch: int | None,
    uids: list[str] | None,
    json_output: bool,
) -> None:
    if not (reason or series or batch or uids):
        fail("say which instances: --reason, --series, --batch or SOP Instance UIDs")
    body = {
        "decision": decision,
        "reason_code": reason,
        "series_instance_uid": series,
        "batch_id": batch,
        "sop_instance_uids": uids or [],
    }
    data = api_request("POST", "/quarantine/decisions", json_body=body)
    if json_output:
        emit_json(data)
        return
    verb = "released into the catalogue" if decision == "release" else "deleted"
    reasons = ", ".join(f"{code}: {n}" for code, n in sorted(data["reasons"].items()))
    stderr.print(f"{data['count']} instance(s) {verb} ({reasons}); recorded in the ledger")


UidsArgument = Annotated[
    list[str] | None, typer.Argument(help="SOP Instance UIDs (optional with a filter).")
]


@quarantine_app.command("release")
def quarantine_release(
    uids: UidsArgument = None,
    reason: ReasonOption = None,
    series: SeriesOption = None,
    batch: BatchOption = None,
    json_output: JsonOption = False,
) -> None:
    """Release the matching instances into the catalogue after looking at them (steward).

    Every given filter must match. One ledger entry records the count and reasons."""
    _decide("release", reason, series, batch, uids, json_output)


@quarantine_app.command("delete")
def quarantine_delete(
    uids: UidsArgument = None,
    reason: ReasonOption = None,
    series: SeriesOption = None,
    batch: BatchOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete the matching instances and their blobs (steward role); recorded in the ledger."""
    _decide("delete", reason, series, batch, uids, json_output)


@quarantine_app.command("expire")
def quarantine_expire(json_output: JsonOption = False) -> None:
    """Delete undecided instances older than INSITU_QUARANTINE_RETENTION_DAYS (host command,
    e.g. from cron; ingest also applies it when a batch starts)."""
    settings = settings_or_fail()
    if settings.quarantine_retention_days <= 0:
        fail("INSITU_QUARANTINE_RETENTION_DAYS is 0: quarantined instances are kept until decided")
    with local_platform(settings) as platform:
        outcome = service.expire_quarantine(platform)
    if json_output:
        emit_json(outcome.as_dict())
        return
    stderr.print(
        f"{outcome.count} quarantined instance(s) older than "
        f"{settings.quarantine_retention_days} days deleted"
    )
