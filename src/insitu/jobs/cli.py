"""Job commands (clients of the API): submit with preflight, list, show, logs, cancel, wait."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from insitu.cli.common import api_get, api_request, emit_json, fail, stderr

job_app = typer.Typer(
    help="Batch jobs: run verified tools next to the data, in a sandbox (client).",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
END_STATES = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


def _line(job: dict[str, Any]) -> str:
    where = f" (#{job['queue_position'] + 1} in the queue)" if job.get("queue_position") else ""
    return f"job {job['id']}  [{job['state']}]{where}  {job['tool']}  {job['flavor']}"


def _show(job: dict[str, Any]) -> None:
    typer.echo(_line(job))
    if job.get("expected_wait_s") is not None:
        typer.echo(f"  expected wait: about {job['expected_wait_s']:.0f} s")
    typer.echo(f"  command: {' '.join(job['command'])}")
    for state, when in job["state_times"].items():
        typer.echo(f"  {state:<10} {when}")
    if job["state"] in END_STATES:
        typer.echo(f"  ended: {job['end_reason']} (exit code {job['exit_code']})")
        if job["hint"]:
            typer.echo(f"  hint: {job['hint']}")
    if job.get("release"):
        release = job["release"]
        typer.echo(
            f"  results: release {release['id']} [{release['state']}] "
            f"(insitu release show {release['id']})"
        )


@job_app.command("submit", context_settings={"allow_interspersed_args": False})
def submit(
    tool: Annotated[str, typer.Option(help="NAME@VERSION of a tool (insitu tool list).")],
    dataset: Annotated[list[str], typer.Option(help="A dataset you may use (repeat).")],
    flavor: Annotated[str, typer.Option(help="Resources: no-gpu, small-gpu, ...")] = "no-gpu",
    dry_run: Annotated[bool, typer.Option(help="Only run the preflight checks.")] = False,
    sample: Annotated[
        int | None, typer.Option(help="Run on the first N subjects of each dataset.")
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="A project of yours the job counts against.")
    ] = None,
    command: Annotated[
        list[str] | None, typer.Argument(help="The command, after --; default: the tool's.")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Check a job and queue it. Every problem preflight finds is printed with its fix."""
    body = {
        "tool": tool,
        "datasets": dataset,
        "flavor": flavor,
        "command": command or None,
        "sample": sample,
        "project": project,
        "dry_run": dry_run,
    }
    import httpx

    from insitu.cli.common import api_token, api_url

    url = api_url()
    token = api_token(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(f"{url}/api/v1/jobs", json=body, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the insitu server at {url} ({exc})")
    if response.status_code == 422 and isinstance(response.json().get("detail"), dict):
        answer = response.json()["detail"]
        if json_output:
            emit_json(answer)
            raise typer.Exit(1)
        for problem in answer["problems"]:
            stderr.print(f"[red]problem[/red] {problem['message']}\n  fix: {problem['fix']}")
        fail(f"preflight found {len(answer['problems'])} problem(s); nothing was queued")
    if response.status_code >= 400:
        fail(f"{response.status_code}: {response.json().get('detail')}")
    answer = response.json()
    if json_output:
        emit_json(answer)
        return
    for warning in answer["warnings"]:
        stderr.print(f"[yellow]warning[/yellow] {warning['message']}\n  {warning['fix']}")
    if "job" in answer:
        typer.echo(_line(answer["job"]))
    else:
        typer.echo("preflight: no problems (dry run: nothing queued)")


@job_app.command("list")
def list_jobs(json_output: JsonFlag = False) -> None:
    """Your jobs, newest first."""
    rows = api_get("/jobs")
    if json_output:
        emit_json(rows)
        return
    for row in rows:
        typer.echo(_line(row))


@job_app.command("show")
def show(job_id: Annotated[int, typer.Argument()], json_output: JsonFlag = False) -> None:
    """A job: its state and when it got there, why it ended, what to do about it."""
    job = api_get(f"/jobs/{job_id}")
    if json_output:
        emit_json(job)
        return
    _show(job)


@job_app.command("logs")
def logs(
    job_id: Annotated[int, typer.Argument()],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """The job's log (the last 1 MB, with UIDs, pseudonyms and long encoded runs redacted)."""
    shown = 0
    while True:
        text = api_request("GET", f"/jobs/{job_id}/logs", raw=True)
        typer.echo(text[shown:], nl=False)
        shown = len(text)
        if not follow or api_get(f"/jobs/{job_id}")["state"] in END_STATES:
            return
        time.sleep(1)


@job_app.command("cancel")
def cancel(job_id: Annotated[int, typer.Argument()]) -> None:
    """Stop a job of yours."""
    typer.echo(_line(api_request("POST", f"/jobs/{job_id}/cancel")))


@job_app.command("wait")
def wait(
    job_id: Annotated[int, typer.Argument()],
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600,
) -> None:
    """Wait for a job to end; exit status 0 only if it succeeded."""
    deadline = time.monotonic() + timeout
    while True:
        job = api_get(f"/jobs/{job_id}")
        if job["state"] in END_STATES:
            _show(job)
            raise typer.Exit(0 if job["state"] == "succeeded" else 1)
        if time.monotonic() > deadline:
            fail(f"job {job_id} is still {job['state']} after {timeout:.0f} s")
        time.sleep(0.5)


@job_app.command("flavors")
def flavors(json_output: JsonFlag = False) -> None:
    """The resource flavors on offer."""
    rows = api_get("/flavors")
    if json_output:
        emit_json(rows)
        return
    for row in rows:
        typer.echo(
            f"{row['name']:<12} {row['cpus']:>3} CPUs {row['memory_mb']:>7} MB "
            f"{row['gpus']} GPU  {row['max_runtime_s'] // 3600:>3} h  {row['backend']}"
        )


@job_app.command("set-flavor")
def set_flavor(
    name: Annotated[str, typer.Argument(help="Flavor name, e.g. small-gpu.")],
    cpus: Annotated[int, typer.Option(help="CPUs.")],
    memory_mb: Annotated[int, typer.Option(help="Memory in MB.")],
    max_runtime_h: Annotated[float, typer.Option(help="Longest run, in hours.")],
    gpus: Annotated[int, typer.Option(help="Whole GPUs.")] = 0,
    scratch_mb: Annotated[int, typer.Option(help="Size of /scratch in MB.")] = 1024,
    backend: Annotated[str, typer.Option(help="local, slurm or kubernetes.")] = "local",
) -> None:
    """Create or change a resource flavor (admins)."""
    body = {
        "cpus": cpus,
        "memory_mb": memory_mb,
        "gpus": gpus,
        "max_runtime_s": int(max_runtime_h * 3600),
        "scratch_mb": scratch_mb,
        "backend": backend,
    }
    api_request("PUT", f"/flavors/{name}", json_body=body)
    typer.echo(f"flavor {name} set")
