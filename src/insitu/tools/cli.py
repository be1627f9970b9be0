"""Tool commands (clients of the API): publish a bundle, find tools, review them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

import typer

from insitu.cli.common import api_get, api_request, emit_json, fail, stderr

tool_app = typer.Typer(
    help="Tools: publish, find, review, verify and deprecate processing tools (client).",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Ref = Annotated[str, typer.Argument(help="NAME@VERSION.")]


def _split(reference: str) -> tuple[str, str]:
    name, _, version = reference.partition("@")
    if not name or not version:
        fail(f"give the tool as NAME@VERSION, not {reference!r}")
    return name, version


def _line(info: dict[str, Any]) -> str:
    return (
        f"{info['name']}@{info['version']}  [{info['state']}]  {info['kind']}, "
        f"{info['runtime']}, {info['min_flavor']}  {info['summary']}"
    )


@tool_app.command("publish")
def publish(
    path: Annotated[Path, typer.Argument(help="The bundle folder (with insitu-tool.toml).")],
    json_output: JsonFlag = False,
) -> None:
    """Publish a tool version as a draft (maintainers). The platform checks the manifest and
    builds the environment (pip, wheels only, hashes required) before storing anything."""
    from insitu.tools.manifest import ManifestError, pack_folder

    try:
        archive = pack_folder(path)
    except (ManifestError, OSError) as exc:
        fail(str(exc))
    digest = hashlib.sha256(archive).hexdigest()
    with stderr.status(
        f"publishing {path} ({len(archive)} bytes, sha256 {digest[:12]}…): "
        "checking and building its environment"
    ):
        info = api_request(
            "POST",
            "/tools",
            content=archive,
            extra_headers={"Content-Type": "application/x-tar", "X-Content-SHA256": digest},
            timeout=1800,
        )
    if json_output:
        emit_json(info)
        return
    typer.echo(_line(info))
    built = "built" if info["environment_built"] else "reused"
    typer.echo(f"  sha256 {info['sha256']}; environment {built}")
    typer.echo(f"  next: insitu tool submit {info['name']}@{info['version']}")


@tool_app.command("list")
def list_tools(json_output: JsonFlag = False) -> None:
    """Tool versions you may see (verified and deprecated ones, and your own)."""
    rows = api_get("/tools")
    if json_output:
        emit_json(rows)
        return
    for row in rows:
        typer.echo(_line(row))


@tool_app.command("show")
def show(
    reference: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
    json_output: JsonFlag = False,
) -> None:
    """A tool version (the newest verified one when no version is given)."""
    name, _, version = reference.partition("@")
    info = api_get(f"/tools/{name}", {"version": version or None})
    if json_output:
        emit_json(info)
        return
    typer.echo(_line(info))
    typer.echo(f"  maintainer {info['maintainer']}; license {info['license']}")
    typer.echo(f"  command {' '.join(info['command'])}")
    typer.echo(f"  sha256 {info['sha256']}; used by {info['jobs']} job(s)")
    for output in info["outputs"]:
        typer.echo(f"  writes /results/{output['pattern']} ({output['type']})")
    if info.get("deprecated_reason"):
        typer.echo(f"  deprecated: {info['deprecated_reason']}; use {info['successor']}")
    if info.get("review_note"):
        typer.echo(f"  review note: {info['review_note']}")


def _review(action: str, reference: str, body: dict[str, str] | None = None) -> None:
    name, version = _split(reference)
    info = api_request("POST", f"/tools/{name}/{version}/{action}", json_body=body or {})
    typer.echo(_line(info))


@tool_app.command("submit")
def submit(reference: Ref) -> None:
    """Ask for review of a draft (its maintainer)."""
    _review("submit", reference)


@tool_app.command("verify")
def verify(reference: Ref, note: Annotated[str, typer.Option(help="A review note.")] = "") -> None:
    """Verify a version in review (admins and stewards; never the tool's maintainer)."""
    _review("verify", reference, {"note": note})


@tool_app.command("reject")
def reject(reference: Ref, note: Annotated[str, typer.Option(help="What to change.")] = "") -> None:
    """Send a version in review back to its maintainer, saying what to change."""
    _review("reject", reference, {"note": note})


@tool_app.command("deprecate")
def deprecate(
    reference: Ref,
    reason: Annotated[str, typer.Option(help="Why it is retired.")],
    successor: Annotated[str, typer.Option(help="NAME@VERSION that replaces it.")],
) -> None:
    """Retire a verified version, naming its successor."""
    _review("deprecate", reference, {"reason": reason, "successor": successor})
