"""Dataset commands (clients of the API): create, list, show, lifecycle, grants, terms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from insitu.cli.common import api_get, api_request, emit_json, fail

dataset_app = typer.Typer(
    help="Datasets: build from the catalogue, release, publish, grant (client).",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _show(info: dict[str, Any], json_output: bool) -> None:
    if json_output:
        emit_json(info)
        return
    typer.echo(f"{info['name']} v{info['version']}  [{info['state']}]  {info['title']}")
    provenance = info.get("provenance") or {}
    if provenance:
        typer.echo(
            f"  {provenance.get('instances', 0)} instances, {provenance.get('bytes', 0)} bytes, "
            f"sites {', '.join(provenance.get('sites', []))}"
        )
    if info.get("content_hash"):
        typer.echo(f"  content sha256 {info['content_hash']}")
    if info.get("pid"):
        status = "registered" if info.get("pid_registered") else "reserved"
        typer.echo(f"  PID {info['pid']} ({status})")
    if info.get("invalidated_reason"):
        typer.echo(f"  invalidated: {info['invalidated_reason']}")
    if info.get("review_policy"):
        typer.echo(f"  job results reviewed by: {info['review_policy']}")


@dataset_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Short name: a-z, 0-9, '.', '_', '-'.")],
    title: Annotated[str, typer.Option(help="Title.")],
    modality: Annotated[str | None, typer.Option(help="Query: modality.")] = None,
    body_part: Annotated[str | None, typer.Option(help="Query: body part.")] = None,
    manufacturer: Annotated[str | None, typer.Option(help="Query: manufacturer.")] = None,
    diagnosis: Annotated[str | None, typer.Option(help="Query: clinical diagnosis.")] = None,
    age_min: Annotated[int | None, typer.Option(help="Query: youngest age.")] = None,
    age_max: Annotated[int | None, typer.Option(help="Query: oldest age.")] = None,
    series_file: Annotated[
        Path | None,
        typer.Option(help="A file of Series Instance UIDs, one a line (instead of a query)."),
    ] = None,
    description: Annotated[str, typer.Option(help="Description.")] = "",
    author: Annotated[list[str] | None, typer.Option(help="An author (repeat).")] = None,
    license_id: Annotated[str, typer.Option("--license", help="SPDX license id.")] = "",
    purpose: Annotated[str, typer.Option(help="What it is for.")] = "",
    terms: Annotated[str, typer.Option(help="Terms of use users must accept.")] = "",
    synthetic: Annotated[bool, typer.Option(help="Synthetic data (tier).")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Create a draft dataset from a catalogue query or a series list (stewards)."""
    body: dict[str, Any] = {
        "name": name,
        "title": title,
        "description": description,
        "authors": author or [],
        "license": license_id,
        "purpose": purpose,
        "terms": terms,
        "tier": "synthetic" if synthetic else "real",
    }
    if series_file is not None:
        try:
            lines = series_file.read_text().split()
        except OSError as exc:
            fail(f"cannot read {series_file}: {exc}")
        body["series"] = [line.strip() for line in lines if line.strip()]
    else:
        body["query"] = {
            "modality": modality,
            "body_part": body_part,
            "manufacturer": manufacturer,
            "diagnosis": diagnosis,
            "age_min": age_min,
            "age_max": age_max,
        }
    _show(api_request("POST", "/datasets", json_body=body), json_output)


@dataset_app.command("edit")
def edit(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    title: Annotated[str | None, typer.Option(help="New title.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    author: Annotated[
        list[str] | None, typer.Option(help="An author (repeat; replaces the list).")
    ] = None,
    license_id: Annotated[str | None, typer.Option("--license", help="SPDX license id.")] = None,
    purpose: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    terms: Annotated[str | None, typer.Option(help="Terms of use.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Change the newest draft's metadata (its stewards); options left out keep their value."""
    body = {
        "title": title,
        "description": description,
        "authors": author,
        "license": license_id,
        "purpose": purpose,
        "terms": terms,
    }
    _show(api_request("PATCH", f"/datasets/{name}", json_body=body), json_output)


@dataset_app.command("add-steward")
def add_steward(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    user: Annotated[str, typer.Argument(help="The user who will steward it too.")],
) -> None:
    """Add a steward to the newest version (its stewards)."""
    api_request("POST", f"/datasets/{name}/stewards", json_body={"user": user})
    typer.echo(f"{user} now stewards {name}")


@dataset_app.command("review-policy")
def review_policy(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    policy: Annotated[
        str, typer.Argument(help="automatic (synthetic data only), one_reviewer, two_reviewers")
    ],
    json_output: JsonFlag = False,
) -> None:
    """Set how results of jobs on the newest version are reviewed before they leave (its
    stewards). With several datasets in a job, the strictest policy applies."""
    answer = api_request("PUT", f"/datasets/{name}/review-policy", json_body={"policy": policy})
    _show(answer, json_output)


@dataset_app.command("list")
def list_datasets(json_output: JsonFlag = False) -> None:
    """Datasets you may see."""
    rows = api_get("/datasets")
    if json_output:
        emit_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['name']:<24} v{row['version']:<3} {row['state']:<12} {row['title']}")


@dataset_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[int | None, typer.Option(help="A version (default: newest).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """A dataset version."""
    _show(api_get(f"/datasets/{name}", {"version": version}), json_output)


def _action(name: str, action: str, json_output: bool, body: Any = None) -> None:
    _show(api_request("POST", f"/datasets/{name}/{action}", json_body=body), json_output)


@dataset_app.command("release")
def release(name: Annotated[str, typer.Argument()], json_output: JsonFlag = False) -> None:
    """Freeze the newest draft and record its content hash (its stewards)."""
    _action(name, "release", json_output)


@dataset_app.command("publish")
def publish(name: Annotated[str, typer.Argument()], json_output: JsonFlag = False) -> None:
    """Make the newest released version's metadata public (its stewards)."""
    _action(name, "publish", json_output)


@dataset_app.command("invalidate")
def invalidate(
    name: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why (shown on its landing page).")],
    json_output: JsonFlag = False,
) -> None:
    """Make the newest version unusable for good (its stewards)."""
    _action(name, "invalidate", json_output, {"reason": reason})


@dataset_app.command("new-version")
def new_version(name: Annotated[str, typer.Argument()], json_output: JsonFlag = False) -> None:
    """A new draft from the newest released version (its stewards)."""
    _action(name, "new-version", json_output)


@dataset_app.command("grant")
def grant(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    grantee: Annotated[str, typer.Argument(help="A user, or a project with --project.")],
    project: Annotated[bool, typer.Option("--project", help="GRANTEE is a project.")] = False,
    until: Annotated[str | None, typer.Option(help="Last moment of use (ISO 8601).")] = None,
) -> None:
    """Grant the use of the dataset (its stewards)."""
    body = {"project" if project else "user": grantee, "until": until}
    answer = api_request("POST", f"/datasets/{name}/grants", json_body=body)
    typer.echo(f"granted {name} to {grantee} (grant {answer['id']}, until {until or 'revoked'})")


@dataset_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    grantee: Annotated[str, typer.Argument(help="A user, or a project with --project.")],
    project: Annotated[bool, typer.Option("--project", help="GRANTEE is a project.")] = False,
) -> None:
    """Revoke every grant of the dataset to a user or a project (its stewards)."""
    body = {"project" if project else "user": grantee}
    answer = api_request("POST", f"/datasets/{name}/revoke", json_body=body)
    typer.echo(f"revoked {answer['revoked']} grant(s) of {name} to {grantee}")


@dataset_app.command("accept-terms")
def accept_terms(name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """Accept the dataset's terms of use (once, before first use)."""
    answer = api_request("POST", f"/datasets/{name}/terms")
    if answer["terms"]:
        typer.echo(answer["terms"])
    typer.echo(f"terms of {name} accepted")


@dataset_app.command("request")
def request(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    purpose: Annotated[str, typer.Option(help="What you will use it for.")],
) -> None:
    """Ask the dataset's stewards for access, stating your purpose."""
    answer = api_request("POST", f"/datasets/{name}/requests", json_body={"purpose": purpose})
    typer.echo(f"asked for {name} (request {answer['id']}); its stewards will decide")


@dataset_app.command("requests")
def requests(
    name: Annotated[str, typer.Argument(help="Dataset name.")], json_output: JsonFlag = False
) -> None:
    """Access requests for a dataset (its stewards)."""
    rows = api_get(f"/datasets/{name}/requests")
    if json_output:
        emit_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['id']:>5}  {row['state']:<9} {row['user']:<16} {row['purpose']}")


@dataset_app.command("approve")
def approve(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    request_id: Annotated[int, typer.Argument(help="The request's id.")],
    until: Annotated[str | None, typer.Option(help="Grant until (ISO 8601).")] = None,
) -> None:
    """Approve an access request: the requester gets a grant (its stewards)."""
    api_request(
        "POST", f"/datasets/{name}/requests/{request_id}/approve", json_body={"until": until}
    )
    typer.echo(f"request {request_id} approved")


@dataset_app.command("refuse")
def refuse(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    request_id: Annotated[int, typer.Argument(help="The request's id.")],
    reason: Annotated[str, typer.Option(help="Why (the requester reads it).")],
) -> None:
    """Refuse an access request, with a reason (its stewards)."""
    api_request(
        "POST", f"/datasets/{name}/requests/{request_id}/refuse", json_body={"note": reason}
    )
    typer.echo(f"request {request_id} refused")


@dataset_app.command("verify")
def verify(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[int | None, typer.Option(help="A version (default: newest).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Re-read and re-hash a released version's stored instances and compare with the hash
    taken at release (host). A mismatch marks the version corrupted; exit status 1."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from insitu.cli.common import local_platform, stderr
    from insitu.datasets import service
    from insitu.db import session_scope

    with local_platform() as platform, session_scope(platform.sessions) as session:
        dataset = service.get_dataset(session, name, version)
        if dataset is None:
            fail(f"no dataset {name!r}")
        total = int(dataset.provenance.get("instances", 0))
        progress = Progress(
            TextColumn("verify"),
            BarColumn(),
            MofNCompleteColumn(),
            console=stderr,
            disable=json_output,
        )
        try:
            with progress:
                task = progress.add_task("verify", total=total)
                result = service.verify_dataset(
                    session, platform.store, dataset, lambda n: progress.advance(task, n)
                )
        except service.DatasetError as exc:
            fail(str(exc))
        label = f"{dataset.name} v{dataset.version}"
        if not result.ok:  # a corrupted version must not stay mountable
            from insitu.datasets.view import remove_view

            remove_view(platform.settings.resolved_views_root, dataset)
    problems = result.problems or []
    if json_output:
        emit_json({"ok": result.ok, "instances": result.instances, "problems": problems})
    else:
        for problem in problems:
            stderr.print(f"[red]problem[/red] {problem}")
        verdict = "OK" if result.ok else "CORRUPTED (marked; it can no longer be used)"
        typer.echo(f"{verdict}: {label}, {result.instances} instances re-read and re-hashed")
    if not result.ok:
        raise typer.Exit(1)


@dataset_app.command("withdraw-subject")
def withdraw_subject(
    subject: Annotated[str, typer.Argument(help="The subject's pseudonym (as in manifest.csv).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """A subject withdrew consent: remove them from every dataset and the catalogue (stewards
    of every dataset holding them). Released versions get new versions without the subject,
    the old ones are invalidated ("withdrawal"), and their blobs are deleted. Irreversible."""
    if not yes and not typer.confirm(
        f"Withdraw subject {subject} from every dataset and delete their images?"
    ):
        raise typer.Exit(1)
    report = api_request("POST", "/withdrawals", json_body={"subject": subject})
    if json_output:
        emit_json(report)
        return
    typer.echo(
        f"subject withdrawn: {report['instances']} instances, "
        f"{report['blobs_deleted']} blobs deleted"
    )
    for label, key in (
        ("new version", "new_versions"),
        ("invalidated", "invalidated"),
        ("draft changed", "drafts_changed"),
    ):
        for version in report[key]:
            typer.echo(f"  {label}: {version}")


@dataset_app.command("view")
def build_view(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[int | None, typer.Option(help="A version (default: newest).")] = None,
) -> None:
    """Build (once) the read-only view of a released version that jobs mount at /data, and
    print where it is (host)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from insitu.cli.common import local_platform, stderr
    from insitu.datasets import service
    from insitu.datasets.view import ensure_view
    from insitu.db import session_scope
    from insitu.storage.protocol import BlobStoreError

    with local_platform() as platform, session_scope(platform.sessions) as session:
        dataset = service.get_dataset(session, name, version)
        if dataset is None:
            fail(f"no dataset {name!r}")
        progress = Progress(TextColumn("view"), BarColumn(), MofNCompleteColumn(), console=stderr)
        try:
            with progress:
                task = progress.add_task("view", total=int(dataset.provenance.get("instances", 0)))
                path = ensure_view(
                    session,
                    platform.store,
                    platform.settings.resolved_views_root,
                    dataset,
                    lambda n: progress.advance(task, n),
                )
        except BlobStoreError as exc:
            fail(str(exc))
    typer.echo(str(path))
