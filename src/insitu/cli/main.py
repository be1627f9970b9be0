"""The ``insitu`` command."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from insitu import __version__
from insitu.access import service as access
from insitu.access.cli import audit_app, login, project_app, token_app, user_app, whoami
from insitu.access.models import Role
from insitu.catalog.cli import catalog_app
from insitu.cli.common import (
    api_url,
    emit_json,
    fail,
    save_token,
    settings_or_fail,
    stderr,
)
from insitu.core.platform import Platform, open_platform
from insitu.datasets.cli import dataset_app
from insitu.db import session_scope
from insitu.ingest.cli import dicom_listen, ingest_app, quarantine_app
from insitu.jobs.cli import job_app
from insitu.ledger import service as ledger
from insitu.ledger.cli import ledger_app
from insitu.ledger.keys import ensure_log_key, load_log_signer
from insitu.releases.cli import release_app
from insitu.settings import Settings, SettingsError, write_settings_file
from insitu.tools.cli import tool_app

app = typer.Typer(
    name="insitu",
    help="insitu: in-situ processing of de-identified medical imaging data.\n\n"
    "Host commands act on $INSITU_HOME (default ./insitu-home); client commands talk to "
    "$INSITU_URL (default http://127.0.0.1:8000) with $INSITU_TOKEN or a saved token.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dicom_app = typer.Typer(help="DICOM network services.", no_args_is_help=True)
dicom_app.command("listen")(dicom_listen)
app.add_typer(user_app, name="user")
app.add_typer(ledger_app, name="ledger")
app.add_typer(catalog_app, name="catalog")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(dicom_app, name="dicom")
app.add_typer(ingest_app, name="ingest")
app.command("whoami")(whoami)
app.command("login")(login)
app.add_typer(token_app, name="token")
app.add_typer(project_app, name="project")
app.add_typer(audit_app, name="audit")
app.add_typer(dataset_app, name="dataset")
app.add_typer(tool_app, name="tool")
app.add_typer(job_app, name="job")
app.add_typer(release_app, name="release")


def _initialise(settings: Settings, admin_name: str) -> tuple[Platform, str | None]:
    write_settings_file(settings.home)
    # Read again for the secret just written; keep what the caller set explicitly.
    kept = {k: getattr(settings, k) for k in settings.model_fields_set if k != "secret_key"}
    settings = settings_or_fail(**kept)
    try:
        platform = open_platform(settings)
    except SettingsError as exc:
        fail(str(exc))
    ensure = getattr(platform.store, "ensure_bucket", None)
    if callable(ensure):
        ensure()
    signer = ensure_log_key(settings)
    token = None
    with session_scope(platform.sessions) as session:
        if not access.has_users(session):
            user = access.create_user(session, admin_name, Role.admin)
            token = access.issue_token(session, user, label="initial")
    if token is not None:  # a new deployment starts with a signed checkpoint of its first entries
        with session_scope(platform.sessions) as session:
            ledger.create_checkpoint(session, signer)
    return platform, token


@app.command()
def init(
    admin: Annotated[str, typer.Option(help="Name of the first admin account.")] = "admin",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a deployment in $INSITU_HOME: settings with a random secret, database, blob
    store and the first admin, whose API token is printed once. Safe to re-run."""
    settings = settings_or_fail()
    platform, token = _initialise(settings, admin)
    platform.close()
    if json_output:
        emit_json({"home": str(settings.home), "admin": admin if token else None, "token": token})
    elif token:
        typer.echo(f"initialised {settings.home}\nadmin {admin}; API token (shown once):\n{token}")
    else:
        typer.echo(f"{settings.home} is already initialised (no new admin created)")


def _serve(platform: Platform, host: str, port: int) -> None:
    import uvicorn

    from insitu.jobs.scheduler import Scheduler
    from insitu.web.app import create_app

    scheduler = Scheduler(platform)  # runs the jobs the API queues
    scheduler.start()
    try:
        uvicorn.run(create_app(platform), host=host, port=port, log_level="info")
    finally:
        scheduler.stop()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the web UI and the API."""
    settings = settings_or_fail()
    try:
        platform = open_platform(settings)
    except SettingsError as exc:
        fail(str(exc))
    try:
        _serve(platform, host, port)
    finally:
        platform.close()


DEMO_ACCOUNTS = (
    ("admin", Role.admin),
    ("steward", Role.steward),
    ("researcher", Role.researcher),
    ("auditor", Role.auditor),
    ("maintainer", Role.maintainer),
)


def prepare_demo(settings: Settings, subjects: int = 3) -> tuple[Platform, dict[str, object]]:
    """Initialise a demo deployment, ingest the sample corpus and create demo accounts."""
    from insitu.ingest import service as ingest
    from insitu.ingest.clinical import ClinicalMapping
    from insitu.ingest.corpus import CLINICAL_MAPPING_TOML, generate_corpus, write_clinical
    from insitu.ingest.deid.table import Options
    from insitu.ingest.sources import iter_sources

    platform, _ = _initialise(settings, "admin")
    accounts_file = settings.home / "demo-accounts.json"
    accounts: dict[str, dict[str, str]] = {}
    if accounts_file.exists():
        accounts = json.loads(accounts_file.read_text())
    with session_scope(platform.sessions) as session:
        for name, role in DEMO_ACCOUNTS:
            if name in accounts:
                continue
            user = access.get_user(session, name) or access.create_user(session, name, role)
            password = f"insitu-demo-{name}"  # demo only: printed in demo-accounts.json
            access.set_password(session, user, password, ledger.HOST_ACTOR)
            accounts[name] = {
                "role": role.value,
                "token": access.issue_token(session, user, "demo"),
                "password": password,
            }
    fd = os.open(accounts_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(accounts, handle, indent=2)
    with tempfile.TemporaryDirectory(prefix="insitu-demo-") as tmp:
        corpus = generate_corpus(
            Path(tmp) / "export",
            subjects=subjects,
            ct_slices=12,
            mr_slices=6,
            rows=256,
            columns=256,
            ultrasound=True,
        )
        clinical = write_clinical(corpus, Path(tmp) / "clinical.csv")
        mapping_path = Path(tmp) / "clinical-map.toml"
        mapping_path.write_text(CLINICAL_MAPPING_TOML)
        result = ingest.ingest(
            platform,
            iter_sources([corpus.root]),
            site="DEMO",
            options=Options.parse(settings.deid_options),
            workers=1,
            clinical=(clinical, ClinicalMapping.load(mapping_path)),
        )
    _demo_dataset(platform)
    _demo_tools(platform)
    sample_job = _demo_job(platform)
    with session_scope(platform.sessions) as session:  # a checkpoint covering the sample data
        ledger.create_checkpoint(session, load_log_signer(settings))
    return platform, {"accounts": accounts, "report": result.report, "job": sample_job}


def _demo_tools(platform: Platform) -> None:
    """The two example tools, published by the demo maintainer and verified by its steward."""
    from insitu.tools import service as tools
    from insitu.tools.environment import EnvironmentBuildError, build_settings
    from insitu.tools.manifest import pack_folder

    settings = platform.settings
    if settings.tool_wheel_dir is None and not settings.tool_index_url:
        stderr.print(
            "demo: example tools skipped: set INSITU_TOOL_WHEEL_DIR (make run does) or "
            "INSITU_TOOL_INDEX_URL to build their environments"
        )
        return
    for folder in sorted(tools.EXAMPLES.iterdir()):
        with session_scope(platform.sessions) as session:
            maintainer = access.get_user(session, "maintainer")
            steward = access.get_user(session, "steward")
            if maintainer is None or steward is None:
                return
            if tools.get_version(session, folder.name) is not None:
                continue
            with stderr.status(f"demo: building the environment of the tool {folder.name}"):
                try:
                    published = tools.publish(
                        session,
                        platform.store,
                        build_settings(settings),
                        pack_folder(folder),
                        access.Principal(maintainer.id, maintainer.name, maintainer.role),
                    )
                except EnvironmentBuildError as exc:
                    stderr.print(f"demo: the tool {folder.name} was skipped: {exc}")
                    continue
            version = published.version
            tools.submit(session, version, access.Principal(maintainer.id, "", maintainer.role))
            label = tools.label(tools.tool_of(session, version), version)
        with stderr.status(f"demo: test run of {label} on demo-sample (the testing tier)"):
            ended = _demo_test_run(platform, label)
        with session_scope(platform.sessions) as session:
            in_review = tools.get_version(session, folder.name)
            steward = access.get_user(session, "steward")
            if in_review is None or steward is None:
                return
            if ended != "succeeded":
                stderr.print(f"demo: the test run of {label} ended {ended}: left in review")
                continue
            tools.verify(
                session,
                in_review,
                access.Principal(steward.id, steward.name, steward.role),
                "example tool shipped with insitu; its test run on demo-sample succeeded",
            )


def _demo_test_run(platform: Platform, label: str) -> str:
    """The maintainer's test run of a tool in review on the synthetic demo dataset, run to
    its end here (the scheduler of `insitu serve` is not up yet); its end state."""
    import time

    from insitu.datasets import service as datasets
    from insitu.jobs import service as jobs
    from insitu.jobs.models import END_STATES, Job
    from insitu.jobs.scheduler import tick

    with session_scope(platform.sessions) as session:
        maintainer = access.get_user(session, "maintainer")
        steward = access.get_user(session, "steward")
        dataset = datasets.get_dataset(session, "demo-sample")
        if maintainer is None or steward is None or dataset is None:
            return "not run"
        if not datasets.can_use_dataset(session, maintainer.id, dataset).allowed:
            datasets.grant(session, dataset, steward.id, user_id=maintainer.id)
            datasets.accept_terms(session, dataset, maintainer.id)
        principal = access.Principal(maintainer.id, maintainer.name, maintainer.role)
        submission = jobs.submit(
            session,
            platform.settings,
            principal,
            tool_ref=label,
            dataset_names=["demo-sample"],
            flavor="no-gpu",
            command=None,
        )
        if submission.job is None:
            return "refused: " + "; ".join(p.message for p in submission.preflight.problems)
        job_id = submission.job.id
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tick(platform)
        with session_scope(platform.sessions) as session:
            job = session.get(Job, job_id)
            if job is not None and job.state in END_STATES:
                return f"{job.state.value}" + (f" ({job.hint})" if job.hint else "")
        time.sleep(0.1)
    return "still running after 600 s"


def _demo_job(platform: Platform) -> int | None:
    """A sample job of the demo researcher: dataset-summary on demo-sample (run by the
    scheduler once the server is up). The researcher accepts the terms first, as a user
    would."""
    from insitu.datasets import service as datasets
    from insitu.jobs import service as jobs
    from insitu.tools import service as tools

    with session_scope(platform.sessions) as session:
        researcher = access.get_user(session, "researcher")
        dataset = datasets.get_dataset(session, "demo-sample")
        if researcher is None or dataset is None:
            return None
        if tools.get_version(session, "dataset-summary", "1.0.0") is None:
            return None
        principal = access.Principal(researcher.id, researcher.name, researcher.role)
        if jobs.list_jobs(session, principal, limit=1):
            return None
        datasets.accept_terms(session, dataset, researcher.id)
        submission = jobs.submit(
            session,
            platform.settings,
            principal,
            tool_ref="dataset-summary@1.0.0",
            dataset_names=["demo-sample"],
            flavor="no-gpu",
            command=None,
        )
        return submission.job.id if submission.job is not None else None


def _demo_dataset(platform: Platform) -> None:
    """The sample data as a released, published synthetic dataset, granted to the researcher."""
    from insitu.catalog.service import SelectionCriteria
    from insitu.datasets import service as datasets
    from insitu.datasets.models import Tier

    with session_scope(platform.sessions) as session:
        if datasets.get_dataset(session, "demo-sample") is not None:
            return
        steward = access.get_user(session, "steward")
        researcher = access.get_user(session, "researcher")
        if steward is None or researcher is None:
            return
        dataset = datasets.create_dataset(
            session,
            "demo-sample",
            datasets.DatasetMetadata(
                title="insitu demo: synthetic CT, MR and ultrasound",
                description="Synthetic studies made by insitu's corpus generator.",
                authors=("insitu",),
                license="CC0-1.0",
                purpose="Trying insitu out",
                terms="Synthetic data: no restrictions beyond trying the platform.",
                tier=Tier.synthetic,
            ),
            steward.id,
            criteria=SelectionCriteria(),
        )
        datasets.release(session, dataset, steward.id, platform.publication)
        datasets.publish(session, dataset, steward.id, platform.publication)
        datasets.grant(session, dataset, steward.id, user_id=researcher.id)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """init + synthetic sample data + demo accounts + serve (what `make run` starts).

    Demo tokens and passwords (for http://HOST:PORT/login) are in
    $INSITU_HOME/demo-accounts.json; this machine's CLI is logged in as the demo researcher."""
    overrides: dict[str, object] = {"demo": True}
    if not os.environ.get("INSITU_PUBLIC_URL"):  # PIDs and landing pages point at this server
        overrides["public_url"] = f"http://{host}:{port}"
    if not os.environ.get("INSITU_PUBLISHER"):
        overrides["publisher"] = "insitu demo"
    settings = settings_or_fail(**overrides)
    platform, info = prepare_demo(settings)
    accounts = info["accounts"]
    assert isinstance(accounts, dict)  # noqa: S101 - built just above
    url = api_url() if os.environ.get("INSITU_URL") else f"http://{host}:{port}"
    save_token(url, accounts["researcher"]["token"])
    counts = info["report"]["counts"]  # type: ignore[index]
    stderr.print(
        f"demo ready: {counts['ingested']} instances ingested, {counts['quarantined']} "
        f"quarantined; accounts and tokens in {settings.home / 'demo-accounts.json'}\n"
        f"open http://{host}:{port}/docs"
    )
    if info.get("job"):
        stderr.print(
            f"demo: sample job {info['job']} (dataset-summary on demo-sample) is queued; "
            f"follow it with `insitu job wait {info['job']}` and `insitu job logs {info['job']}`"
        )
    try:
        _serve(platform, host, port)
    finally:
        platform.close()


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
