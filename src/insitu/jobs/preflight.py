"""Preflight: everything that can be known about a job before it is queued, each problem
reported with its fix. It runs at submit time and for ``--dry-run``.

It calls the datasets domain's ``can_use_dataset`` and the tools domain's ``check_runnable``
(the only places those decisions are made), checks the flavor and the quota, and reads the
command against the job's real mount table (DESIGN.md): ``/data/<view>`` read-only for the
datasets given, ``/opt/tool`` read-only, ``/home/<user>``, ``/scratch`` and ``/results``
writable, and nothing of the host.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.datasets import service as datasets
from insitu.datasets.models import Dataset
from insitu.datasets.view import view_name
from insitu.db import utcnow
from insitu.jobs.models import END_STATES, Flavor, Job
from insitu.tools import service as tools
from insitu.tools.models import ToolVersion

FLAVOR_ORDER = ("no-gpu", "small-gpu", "medium-gpu", "large-gpu")
WRITABLE = ("/results", "/scratch", "/home")
IMAGE_BACKENDS = ("kubernetes",)  # the backends that run OCI images
READ_ONLY = ("/data", "/opt/tool")
PROGRAM_ROOTS = ("/usr/bin", "/usr/local/bin", "/bin")
# Paths people type that exist on the host but never in a job (/tmp: a job has its own).
HOST_ONLY = (
    "/root", "/etc", "/var", "/tmp", "/mnt",  # noqa: S108 - names to recognise, not to use "/media", "/srv", "/run", "/proc", "/sys",
    "/dev", "/boot", "/Users", "/work", "/nfs", "/gpfs", "/lustre",
)  # fmt: skip
OUTPUT_OPTIONS = re.compile(
    r"^(-o|--out|--output|--output-dir|--outdir|--out-dir|--save|--save-dir|--results|"
    r"--model-dir|--checkpoint-dir|--log-dir)$"
)
_REDIRECT = re.compile(r"(?:^|[\s;&|])\d?>>?\s*(/[^\s;&|]*)")


@dataclass(frozen=True)
class Problem:
    """One reason a job would fail, and what to do instead."""

    code: str
    message: str
    fix: str


@dataclass
class Quota:
    """Per-user and per-project limits."""

    concurrent_jobs: int = 4
    gpu_hours_per_week: float = 40.0
    project_concurrent_jobs: int = 16
    project_gpu_hours_per_week: float = 200.0


@dataclass
class Preflight:
    """What preflight found: problems block the job; warnings do not."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    tool_version: ToolVersion | None = None
    datasets: list[Dataset] = field(default_factory=list)
    flavor: Flavor | None = None
    project_id: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the job may be queued."""
        return not self.problems

    def add(self, code: str, message: str, fix: str) -> None:
        """A blocking problem."""
        self.problems.append(Problem(code, message, fix))

    def warn(self, code: str, message: str, fix: str) -> None:
        """A warning: the job runs, but probably not as meant."""
        self.warnings.append(Problem(code, message, fix))


def _check_tool(session: Session, result: Preflight, tool_ref: str) -> None:
    name, _, version = tool_ref.partition("@")
    if not name or not version:
        result.add(
            "tool_reference",
            f"the tool {tool_ref!r} names no version",
            "give it as NAME@VERSION, e.g. dataset-summary@1.0.0 (insitu tool list)",
        )
        return
    found = tools.get_version(session, name, version)
    if found is None:
        result.add(
            "tool_unknown",
            f"no tool {tool_ref}",
            "pick one from `insitu tool list`; versions are exact, e.g. 1.0.0",
        )
        return
    result.tool_version = found


def _check_datasets(
    session: Session, result: Preflight, user_id: int, names: Sequence[str]
) -> None:
    if not names:
        result.add("no_dataset", "the job names no dataset", "add --dataset NAME")
    for name in names:
        dataset_name, _, version = name.partition("@")
        dataset = datasets.get_dataset(
            session, dataset_name, int(version) if version.isdigit() else None
        )
        if dataset is None or not datasets.can_see_dataset(session, user_id, dataset):
            result.add(
                "dataset_unknown",
                f"no dataset {name!r} that you may see",
                "check the name with `insitu dataset list`, or ask its stewards for access "
                "(insitu dataset request NAME --purpose ...)",
            )
            continue
        decision = datasets.can_use_dataset(session, user_id, dataset)
        if not decision.allowed:
            fixes = {
                "terms": f"read and accept them: insitu dataset accept-terms {dataset.name}",
                "grant": f"ask for access: insitu dataset request {dataset.name} --purpose ...",
                "draft": "wait for its stewards to release it",
                "invalidated": "use a newer version (insitu dataset show NAME)",
            }
            fix = next((f for k, f in fixes.items() if k in decision.reason), "ask its stewards")
            result.add(
                "dataset_unusable",
                f"you may not use {dataset.name} v{dataset.version}: {decision.reason}",
                fix,
            )
            continue
        result.datasets.append(dataset)


def _check_flavor(
    session: Session, result: Preflight, user_id: int, flavor_name: str, quota: Quota
) -> None:
    flavor = session.scalars(select(Flavor).where(Flavor.name == flavor_name)).first()
    if flavor is None:
        names = ", ".join(session.scalars(select(Flavor.name).order_by(Flavor.id)))
        result.add("flavor_unknown", f"no flavor {flavor_name!r}", f"use one of: {names}")
        return
    result.flavor = flavor
    version = result.tool_version
    if version is not None:
        if version.gpu and flavor.gpus == 0:
            result.add(
                "flavor_no_gpu",
                f"the tool needs a GPU and {flavor.name} has none",
                f"use --flavor {version.min_flavor} or larger",
            )
        elif (
            version.min_flavor in FLAVOR_ORDER
            and flavor.name in FLAVOR_ORDER
            and FLAVOR_ORDER.index(flavor.name) < FLAVOR_ORDER.index(version.min_flavor)
        ):
            result.add(
                "flavor_too_small",
                f"the tool needs at least {version.min_flavor}; {flavor.name} is smaller",
                f"use --flavor {version.min_flavor}",
            )
    _check_quota(session, result, flavor, Job.user_id == user_id, "you",
                 quota.concurrent_jobs, quota.gpu_hours_per_week)  # fmt: skip
    if result.project_id is not None:
        _check_quota(session, result, flavor, Job.project_id == result.project_id,
                     "your project", quota.project_concurrent_jobs,
                     quota.project_gpu_hours_per_week)  # fmt: skip


def _check_quota(
    session: Session,
    result: Preflight,
    flavor: Flavor,
    whose: ColumnElement[bool],
    who: str,
    concurrent: int,
    gpu_hours: float,
) -> None:
    prefix = "quota" if who == "you" else "quota_project"
    live = session.scalars(select(Job).where(whose, Job.state.not_in(list(END_STATES)))).all()
    if len(live) >= concurrent:
        result.add(
            f"{prefix}_concurrent",
            f"{who} have {len(live)} jobs queued or running; the limit is {concurrent}",
            "wait for one to end, or cancel one (insitu job cancel ID)",
        )
    if flavor.gpus:
        used = gpu_hours_this_week(session, whose)
        wanted = flavor.gpus * flavor.max_runtime_s / 3600
        if used + wanted > gpu_hours:
            result.add(
                f"{prefix}_gpu_hours",
                f"this job may use {wanted:.1f} GPU-hours and {who} used {used:.1f} of "
                f"{gpu_hours:.0f} this week",
                "use a smaller GPU flavor, or wait until older jobs fall out of the week",
            )


def gpu_hours_this_week(session: Session, whose: ColumnElement[bool]) -> float:
    """GPU-hours of the last 7 days of the jobs ``whose`` selects (a user's, a project's);
    jobs not yet ended count their time limit."""
    since = utcnow() - dt.timedelta(days=7)
    flavors = {f.name: f for f in session.scalars(select(Flavor))}
    total = 0.0
    for job in session.scalars(select(Job).where(whose, Job.created_at >= since)):
        flavor = flavors.get(job.flavor)
        if flavor is None or not flavor.gpus:
            continue
        seconds = job.details.get("run_seconds")
        if seconds is None:
            seconds = flavor.max_runtime_s if job.state not in END_STATES else 0
        total += flavor.gpus * float(seconds) / 3600
    return total


def _paths_in(argument: str) -> list[str]:
    """Path-like pieces of one argument: itself, the value of --opt=/x, shell redirections."""
    found = []
    value = argument.split("=", 1)[1] if argument.startswith("-") and "=" in argument else argument
    if value.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:\\", value):
        found.append(value)
    found += _REDIRECT.findall(argument)
    if " " in argument:  # a shell snippet: look at its words too
        words = (w.strip("\"'(),;") for w in argument.split())
        found += [w for w in words if w.startswith(("/", "~"))]
    return list(dict.fromkeys(found))


def _check_path(result: Preflight, path: str, views: set[str], user: str, writing: bool) -> None:
    if path.startswith("~"):
        result.add(
            "path_tilde",
            f"{path}: '~' is not expanded in a job's command",
            f"write /home/{user}/{path[1:].lstrip('/')} (your home) instead",
        )
        return
    if re.match(r"^[A-Za-z]:\\", path):
        result.add(
            "path_windows",
            f"{path} is a path on your computer",
            "jobs see only /data, /home, /scratch, /results and /opt/tool: upload nothing, "
            "read the dataset under /data/NAME-vN",
        )
        return
    normal = posixpath.normpath(path if path.startswith("/") else posixpath.join("/results", path))
    if normal.startswith("/data"):
        parts = normal.split("/")
        if len(parts) > 2 and parts[2] not in views:
            close = [v for v in views if v.startswith(parts[2] + "-v") or parts[2] in v]
            fix = (
                f"use /data/{close[0]} (datasets are mounted as NAME-vVERSION)"
                if close
                else f"add --dataset {parts[2]} to the job, or use one of: "
                + (", ".join(f"/data/{v}" for v in sorted(views)) or "none given")
            )
            result.add("path_dataset_not_given", f"{path}: no dataset {parts[2]} in this job", fix)
        if writing:
            result.add(
                "write_to_data",
                f"{path}: /data is read-only",
                "write outputs to /results (they can leave, after review) or /scratch (temporary)",
            )
        return
    if normal.startswith(READ_ONLY[1]):
        if writing:
            result.add("write_to_tool", f"{path}: /opt/tool is read-only", "write to /results")
        return
    for root in WRITABLE:
        if normal == root or normal.startswith(root + "/"):
            if root == "/home" and not (
                normal in ("/home", f"/home/{user}") or normal.startswith(f"/home/{user}/")
            ):
                result.add(
                    "path_other_home",
                    f"{path}: only your own home, /home/{user}, is in a job",
                    f"use /home/{user}",
                )
            elif writing and root != "/results":
                result.warn(
                    "output_outside_results",
                    f"{path}: outputs written there stay inside the platform",
                    "write what you want to take out to /results: only /results becomes a "
                    "release request",
                )
            return
    if any(normal == r or normal.startswith(r + "/") for r in PROGRAM_ROOTS):
        return
    host = next((r for r in HOST_ONLY if normal == r or normal.startswith(r + "/")), None)
    result.add(
        "path_host" if host else "path_outside",
        f"{path} is {'a host path, ' if host else ''}not visible in a job",
        "a job sees /data/NAME-vN (datasets, read-only), /opt/tool (the tool), /home/"
        f"{user}, /scratch and /results; see /data/NAME-vN/README.txt",
    )


def check_command(result: Preflight, command: Sequence[str], user: str) -> None:
    """The command against the job's mount table."""
    if not command:
        result.add(
            "command_empty",
            "the command is empty",
            "give it after --, or leave it out to run the tool's default command",
        )
        return
    views = {view_name(d) for d in result.datasets}
    writing_next = False
    for index, argument in enumerate(command):
        option_value = argument.startswith("-") and "=" in argument
        writes = writing_next or (
            option_value and bool(OUTPUT_OPTIONS.match(argument.split("=", 1)[0]))
        )
        redirects = set(_REDIRECT.findall(argument))
        for path in _paths_in(argument):
            if index == 0 and path.startswith(PROGRAM_ROOTS):
                continue
            _check_path(result, path, views, user, writes or path in redirects)
        writing_next = bool(OUTPUT_OPTIONS.match(argument))


def run_preflight(
    session: Session,
    *,
    user_id: int,
    user_name: str,
    tool_ref: str,
    dataset_names: Sequence[str],
    flavor_name: str,
    command: Sequence[str] | None,
    sample: int | None = None,
    quota: Quota | None = None,
    can_run_images: bool = False,
    project: str | None = None,
) -> Preflight:
    """Every check, every problem with its fix. ``command`` None: the tool's default."""
    result = Preflight()
    if project is not None:
        found = access.get_project(session, project)
        if found is None or access.project_role(session, found, user_id) is None:
            result.add(
                "project_unknown",
                f"no project {project!r} that you are a member of",
                "leave --project out, or ask the project's lead to add you",
            )
        else:
            result.project_id = found.id
    _check_tool(session, result, tool_ref)
    _check_datasets(session, result, user_id, dataset_names)
    version = result.tool_version
    if version is not None and result.datasets:
        decision = tools.check_runnable(session, version, result.datasets, user_id)
        for reason in decision.reasons:
            result.add(
                "tool_not_runnable",
                reason,
                "use a verified version (insitu tool list), or test yours on a synthetic dataset",
            )
    _check_flavor(session, result, user_id, flavor_name, quota or Quota())
    images = can_run_images or (
        result.flavor is not None and result.flavor.backend in IMAGE_BACKENDS
    )
    if version is not None and version.runtime == "oci" and not images:
        result.add(
            "backend_no_images",
            f"{tool_ref} runs an OCI image and the {flavor_name} flavor's backend runs bundles "
            "only",
            "use a flavor on the kubernetes backend, or a bundle version of the tool",
        )
    if sample is not None and sample < 1:
        result.add("sample_size", f"--sample {sample} is not a number of subjects", "use 1 or more")
    effective = list(command) if command else list(version.command if version else [])
    check_command(result, effective, user_name)
    return result
