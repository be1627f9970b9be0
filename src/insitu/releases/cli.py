"""Release commands (clients of the API): list, show, approve, reject, download."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from insitu.cli.common import (
    api_get,
    api_request,
    api_token,
    api_url,
    emit_json,
    fail,
    http_client,
)

release_app = typer.Typer(
    help="Release requests: job results leave only after the checks and a review (client).",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MARK = {"pass": "ok  ", "flag": "FLAG", "refuse": "NO  "}


def _line(release: dict[str, Any]) -> str:
    return (
        f"release {release['id']}  [{release['state']}]  job {release['job']}  "
        f"{len(release['files'])} files, {release['total_bytes']:,} bytes  "
        f"policy {release['policy']}  ({release['user']}; {', '.join(release['datasets'])})"
    )


def _show(release: dict[str, Any]) -> None:
    typer.echo(_line(release))
    typer.echo(f"  tool: {release['tool']}  command: {' '.join(release['command'])}")
    if release["reason"]:
        typer.echo(f"  why: {release['reason']}")
    approvals = sum(v["decision"] == "approve" for v in release["votes"])
    typer.echo(f"  approvals: {approvals} of {release['approvals_needed']}")
    for vote in release["votes"]:
        typer.echo(f"  vote: {vote['reviewer']} {vote['decision']}: {vote['comment']}")
    for item in release["files"]:
        typer.echo(
            f"  {MARK[item['verdict']]} {item['path']}  ({item['media_type']}, "
            f"{item['size']:,} bytes)"
        )
        for check in item["checks"]:
            if check["verdict"] != "pass":
                typer.echo(f"         {check['check']}: {check['reason']}")


@release_app.command("list")
def list_releases(
    review: Annotated[bool, typer.Option(help="Those waiting for your review.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Your release requests, newest first (or, with --review, your review queue)."""
    releases = api_get("/releases", {"review": review})
    if json_output:
        emit_json(releases)
        return
    for release in releases:
        typer.echo(_line(release))
    if not releases:
        typer.echo("no release requests" + (" waiting for you" if review else ""))


@release_app.command("show")
def show(release_id: int, json_output: JsonFlag = False) -> None:
    """A request: its state, votes and every file's check results."""
    release = api_get(f"/releases/{release_id}")
    if json_output:
        emit_json(release)
    else:
        _show(release)


@release_app.command("approve")
def approve(
    release_id: int,
    comment: Annotated[str, typer.Option(help="A note for the ledger and the requester.")] = "",
    json_output: JsonFlag = False,
) -> None:
    """Approve a request (a steward of every dataset the job used, not the requester)."""
    release = api_request("POST", f"/releases/{release_id}/approve", json_body={"comment": comment})
    if json_output:
        emit_json(release)
    else:
        _show(release)


@release_app.command("reject")
def reject(
    release_id: int,
    reason: Annotated[str, typer.Option(help="What the requester should change.")],
    json_output: JsonFlag = False,
) -> None:
    """Reject a request, telling the requester what to change."""
    release = api_request("POST", f"/releases/{release_id}/reject", json_body={"comment": reason})
    if json_output:
        emit_json(release)
    else:
        _show(release)


def _target(dest: Path, relative: str) -> Path:
    target = (dest / relative).resolve()
    if not target.is_relative_to(dest.resolve()):  # names were checked; a server is not trusted
        fail(f"{relative!r} would land outside {dest}")
    return target


def _fetch(client: httpx.Client, path: str, token: str | None, target: Path,
           expected: str, progress: Any, task: Any) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target.parent.mkdir(parents=True, exist_ok=True)
    spool = target.with_name(f".{target.name}.part")
    digest = hashlib.sha256()
    with client.stream("GET", f"/api/v1{path}", headers=headers) as response:
        if response.status_code >= 400:
            response.read()
            fail(f"{response.status_code}: {response.json().get('detail')}")
        if response.headers.get("X-Insitu-SHA256") != expected:
            fail(f"{path}: the server announced another hash than the request lists")
        with spool.open("wb") as out:
            for chunk in response.iter_bytes(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
                progress.advance(task, len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if digest.hexdigest() != expected:
        spool.unlink()
        fail(f"{target.name}: the downloaded bytes do not match their SHA-256; nothing was kept")
    spool.rename(target)


@release_app.command("download")
def download(
    release_id: int,
    dest: Annotated[Path, typer.Argument(help="A folder; files keep their /results paths.")],
    json_output: JsonFlag = False,
) -> None:
    """Download an approved request's files into DEST, each streamed and checked against its
    SHA-256 before it is kept."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    release = api_get(f"/releases/{release_id}")
    if release["state"] != "approved":
        fail(f"release {release_id} is {release['state']}: only approved files can be downloaded")
    files = [f for f in release["files"] if f["verdict"] != "refuse"]
    dest.mkdir(parents=True, exist_ok=True)
    url = api_url()
    token = api_token(url)
    saved = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        disable=json_output, transient=True)  # fmt: skip
    with progress, http_client(url, timeout=600) as client:
        task = progress.add_task(f"release {release_id}", total=sum(f["size"] for f in files))
        for item in files:
            target = _target(dest, item["path"])
            _fetch(client, f"/releases/{release_id}/files/{item['id']}", token, target,
                   item["sha256"], progress, task)  # fmt: skip
            saved.append({"path": str(target), "sha256": item["sha256"], "size": item["size"]})
    if json_output:
        emit_json(saved)
        return
    for entry in saved:
        typer.echo(f"{entry['path']}  sha256 {entry['sha256']} (verified)")
