"""Tool service: publish (validate, build the environment, store), review, verify, deprecate,
find, and the one decision of whether a tool version may run on some datasets
(``check_runnable``). Functions never commit; each change is written with its ledger event in
the caller's transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from insitu.access.models import Role
from insitu.access.service import Principal
from insitu.datasets.models import Dataset, Tier
from insitu.db import utcnow
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.ledger.models import LedgerEntry
from insitu.storage.protocol import BlobStore
from insitu.tools.environment import (
    BuildSettings,
    Environment,
    ensure_environment,
    environment_path,
)
from insitu.tools.manifest import MANIFEST_NAME, ManifestError, parse_manifest, unpack
from insitu.tools.models import Tool, ToolState, ToolVersion

TOOL_PUBLISHED = events.register("tool.published", "a tool version was published (draft)")
TOOL_SUBMITTED = events.register("tool.submitted", "a tool version was submitted for review")
TOOL_VERIFIED = events.register("tool.verified", "a reviewer verified a tool version")
TOOL_REJECTED = events.register("tool.rejected", "a reviewer sent a tool version back")
TOOL_DEPRECATED = events.register("tool.deprecated", "a tool version was deprecated")
TOOL_ENVIRONMENT_BUILT = events.register(
    "tool.environment_built", "a tool version's environment was built in the sandbox"
)
TOOL_USED = events.register("tool.used", "a job or session ran a tool version")
REVIEWER_ROLES = frozenset({Role.admin, Role.steward})
EXAMPLES = Path(__file__).parent / "examples"
"""The example tools the demo publishes: dataset-summary and radiomics-classifier."""


class ToolError(ValueError):
    """A tool request that cannot be fulfilled (bad input), with the reason."""


class NotAllowedError(ToolError):
    """The caller may not do this to this tool."""


class ToolStateError(ToolError):
    """Not in the tool version's current state (or it exists already)."""


def label(tool: Tool, version: ToolVersion) -> str:
    """``name@version``."""
    return f"{tool.name}@{version.version}"


def _subject(tool: Tool, version: ToolVersion) -> str:
    return f"tool:{label(tool, version)}"


def tool_of(session: Session, version: ToolVersion) -> Tool:
    """The tool a version belongs to."""
    tool = session.get(Tool, version.tool_id)
    if tool is None:  # pragma: no cover - a foreign key
        raise ToolError(f"tool version {version.id} has no tool")
    return tool


def declared_outputs(session: Session, tool_version_id: int) -> tuple[str, list[str]]:
    """A version's ``name@version`` and the output patterns its manifest declares."""
    version = session.get(ToolVersion, tool_version_id)
    if version is None:
        return "", []
    return label(tool_of(session, version), version), [o["pattern"] for o in version.outputs]


def image_of(session: Session, tool_version_id: int) -> str:
    """The OCI image a version runs, or "bundle" for a built environment."""
    version = session.get(ToolVersion, tool_version_id)
    return (version.image or "bundle") if version is not None else ""


@dataclass(frozen=True)
class Published:
    """What publishing did."""

    version: ToolVersion
    environment: Environment | None


def publish(
    session: Session,
    store: BlobStore,
    build: BuildSettings,
    archive: bytes,
    maintainer: Principal,
    declared_sha256: str | None = None,
) -> Published:
    """Validate a bundle archive, build its environment, store it and record a draft version.
    Any failure stores nothing (a built environment is only kept for a valid version)."""
    digest = hashlib.sha256(archive).hexdigest()
    if declared_sha256 is not None and declared_sha256.lower() != digest:
        raise ToolError(
            f"the bundle's SHA-256 is {digest}, not the declared {declared_sha256}: it changed "
            "on the way; publish again"
        )
    files = unpack(archive)
    try:
        manifest = parse_manifest(files[MANIFEST_NAME].decode("utf-8"), files)
    except UnicodeDecodeError:
        raise ManifestError(f"{MANIFEST_NAME} is not UTF-8 text") from None
    tool = session.scalars(select(Tool).where(Tool.name == manifest.name)).first()
    if tool is not None and tool.maintainer_id != maintainer.user_id:
        raise NotAllowedError(
            f"the tool {manifest.name} belongs to another maintainer: pick another name"
        )
    if tool is not None and session.scalar(
        select(ToolVersion.id).where(
            ToolVersion.tool_id == tool.id, ToolVersion.version == manifest.version
        )
    ):
        raise ToolStateError(
            f"{manifest.name}@{manifest.version} exists and versions never change: raise the "
            "version in insitu-tool.toml"
        )
    readme = ""
    if manifest.readme:
        try:
            readme = files[manifest.readme].decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{manifest.readme} is not UTF-8 text") from None
    environment = None
    if manifest.runtime == "bundle":
        environment = ensure_environment(build, digest, files, manifest.requirements)
        store.put(archive)
    else:
        digest = manifest.image.rsplit("@sha256:", 1)[1]
    if tool is None:
        tool = Tool(name=manifest.name, maintainer_id=maintainer.user_id)
        session.add(tool)
        session.flush()
    version = ToolVersion(
        tool_id=tool.id,
        version=manifest.version,
        digest=digest,
        summary=manifest.summary,
        readme=readme,
        license=manifest.license,
        kind=manifest.kind,
        command=list(manifest.command),
        min_flavor=manifest.min_flavor,
        gpu=manifest.gpu,
        outputs=[{"pattern": o.pattern, "type": o.type} for o in manifest.outputs],
        runtime=manifest.runtime,
        image=manifest.image or None,
        requirements=manifest.requirements or None,
        state=ToolState.draft,
        published_by=maintainer.user_id,
    )
    session.add(version)
    session.flush()
    actor = ledger.user_actor(maintainer.user_id)
    ledger.record(
        session,
        TOOL_PUBLISHED,
        actor=actor,
        subject=_subject(tool, version),
        payload={"sha256": digest, "runtime": manifest.runtime},
    )
    if environment is not None:
        _record_build(session, tool, version, environment)
    return Published(version, environment)


def _record_build(
    session: Session, tool: Tool, version: ToolVersion, environment: Environment
) -> None:
    if environment.built:
        ledger.record(
            session,
            TOOL_ENVIRONMENT_BUILT,
            actor=ledger.HOST_ACTOR,
            subject=_subject(tool, version),
            payload={"milliseconds": int(environment.seconds * 1000)},
        )


def environment_of(
    session: Session, store: BlobStore, build: BuildSettings, version: ToolVersion
) -> Environment:
    """The built environment of a bundle version: reused, or rebuilt from the stored bundle
    (e.g. on a new host); what jobs call before they mount it at /opt/tool."""
    if version.runtime != "bundle" or version.requirements is None:
        raise ToolError(f"version {version.version} runs an OCI image: it has no environment")
    built = environment_path(build, version.digest)
    if (built / "BUILD.txt").is_file():  # the common case: no need to read the bundle
        return Environment(built, built=False)
    files = unpack(store.get(version.digest))
    environment = ensure_environment(build, version.digest, files, version.requirements)
    _record_build(session, tool_of(session, version), version, environment)
    return environment


# -- review lifecycle --------------------------------------------------------------------------


def _require_maintainer(tool: Tool, principal: Principal) -> None:
    if tool.maintainer_id != principal.user_id:
        raise NotAllowedError(f"only the maintainer of {tool.name} may do that")


def submit(session: Session, version: ToolVersion, principal: Principal) -> None:
    """The maintainer asks for review of a draft."""
    tool = tool_of(session, version)
    _require_maintainer(tool, principal)
    if version.state != ToolState.draft:
        raise ToolStateError(f"{label(tool, version)} is {version.state.value}, not a draft")
    version.state = ToolState.in_review
    ledger.record(
        session,
        TOOL_SUBMITTED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(tool, version),
    )


def _require_reviewer(tool: Tool, version: ToolVersion, principal: Principal) -> None:
    if principal.role not in REVIEWER_ROLES:
        raise NotAllowedError("only an admin or a steward may review tools")
    if principal.user_id in (tool.maintainer_id, version.published_by):
        raise NotAllowedError(f"you maintain {tool.name}: another admin or steward must review it")
    if version.state != ToolState.in_review:
        raise ToolStateError(
            f"{label(tool, version)} is {version.state.value}: only versions in review can be "
            "verified or rejected (the maintainer submits them)"
        )


def passing_test_runs(session: Session, tool: Tool, version: ToolVersion) -> int:
    """Jobs that ran this version to success on synthetic-tier data only (from the ledger)."""
    payloads = session.scalars(
        select(LedgerEntry.payload).where(
            LedgerEntry.event_type == TOOL_USED.name,
            LedgerEntry.subject == _subject(tool, version),
        )
    )
    count = 0
    for text in payloads:
        payload = json.loads(text)
        if payload.get("state") == "succeeded" and payload.get("tiers") == ["synthetic"]:
            count += 1
    return count


def verify(
    session: Session,
    version: ToolVersion,
    principal: Principal,
    note: str = "",
    *,
    require_test_run: bool = True,
) -> None:
    """A reviewer (admin or steward, never the maintainer) verifies a version in review, once
    a job has run it to success on synthetic-tier data (the maintainer's testing tier)."""
    tool = tool_of(session, version)
    _require_reviewer(tool, version, principal)
    if require_test_run and not passing_test_runs(session, tool, version):
        raise ToolStateError(
            f"{label(tool, version)} has no passing test run: its maintainer runs it first on a "
            f"synthetic dataset (insitu job submit --tool {label(tool, version)} --dataset "
            "SYNTHETIC ...), and it must succeed"
        )
    version.state = ToolState.verified
    version.reviewed_by = principal.user_id
    version.reviewed_at = utcnow()
    version.review_note = note.strip()
    ledger.record(
        session,
        TOOL_VERIFIED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(tool, version),
        payload={"sha256": version.digest},
    )


def reject(session: Session, version: ToolVersion, principal: Principal, note: str) -> None:
    """A reviewer sends a version back to draft, saying what to change."""
    tool = tool_of(session, version)
    _require_reviewer(tool, version, principal)
    if not note.strip():
        raise ToolError("rejecting needs a note telling the maintainer what to change")
    version.state = ToolState.draft
    version.reviewed_by = principal.user_id
    version.reviewed_at = utcnow()
    version.review_note = note.strip()
    ledger.record(
        session,
        TOOL_REJECTED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(tool, version),
    )


def deprecate(
    session: Session, version: ToolVersion, principal: Principal, reason: str, successor: str
) -> None:
    """Retire a verified version (its maintainer, an admin or a steward), naming its successor."""
    tool = tool_of(session, version)
    if tool.maintainer_id != principal.user_id and principal.role not in REVIEWER_ROLES:
        raise NotAllowedError(f"only the maintainer of {tool.name}, an admin or a steward may")
    if version.state != ToolState.verified:
        raise ToolStateError(
            f"{label(tool, version)} is {version.state.value}: only verified versions are "
            "deprecated"
        )
    if not reason.strip():
        raise ToolError("deprecating needs a reason")
    name, _, number = successor.partition("@")
    replacement = get_version(session, name, number or None)
    if replacement is None or not number:
        raise ToolError(f"successor {successor!r} is not a published tool: give NAME@VERSION")
    if replacement.id == version.id or replacement.state == ToolState.deprecated:
        raise ToolError(f"successor {successor} cannot replace it: pick a live version")
    version.state = ToolState.deprecated
    version.deprecated_reason = reason.strip()
    version.successor = successor
    ledger.record(
        session,
        TOOL_DEPRECATED,
        actor=ledger.user_actor(principal.user_id),
        subject=_subject(tool, version),
        payload={"reason": reason.strip(), "successor": successor},
    )


# -- finding tools -----------------------------------------------------------------------------


def get_version(session: Session, name: str, version: str | None = None) -> ToolVersion | None:
    """A version by name (the newest verified one, else the newest, when none is given)."""
    statement = select(ToolVersion).join(Tool, Tool.id == ToolVersion.tool_id)
    statement = statement.where(Tool.name == name)
    if version is not None:
        return session.scalars(statement.where(ToolVersion.version == version)).first()
    rows = list(session.scalars(statement.order_by(ToolVersion.id.desc())))
    verified = [v for v in rows if v.state == ToolState.verified]
    candidates = verified or rows
    return candidates[0] if candidates else None


def can_see(session: Session, version: ToolVersion, principal: Principal) -> bool:
    """Verified and deprecated versions are for everyone; drafts and reviews for their
    maintainer and the reviewers."""
    if version.state in (ToolState.verified, ToolState.deprecated):
        return True
    tool = tool_of(session, version)
    return principal.user_id == tool.maintainer_id or principal.role in REVIEWER_ROLES


def list_versions(session: Session, principal: Principal) -> list[tuple[Tool, ToolVersion]]:
    """Every version the caller may see, by tool name and newest first."""
    rows = session.execute(
        select(Tool, ToolVersion)
        .join(ToolVersion, ToolVersion.tool_id == Tool.id)
        .order_by(Tool.name, ToolVersion.id.desc())
    ).all()
    return [(t, v) for t, v in rows if can_see(session, v, principal)]


def jobs_using(session: Session, tool: Tool, version: ToolVersion) -> int:
    """How many jobs and sessions ran this version, counted from the ledger."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(
                LedgerEntry.event_type == TOOL_USED.name,
                LedgerEntry.subject == _subject(tool, version),
            )
        )
        or 0
    )


_markdown = MarkdownIt("commonmark", {"html": False})


def readme_html(text: str) -> str:
    """A README rendered safely: raw HTML is shown as text, and javascript:, vbscript:,
    file: and data: links are not made. Headings move one level down, so the page keeps its
    own single ``h1``."""
    env: dict[str, Any] = {}
    tokens = _markdown.parse(text, env)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + 1, 6)}"
    return str(_markdown.renderer.render(tokens, _markdown.options, env))


# -- may it run? ---------------------------------------------------------------------------------


@dataclass
class RunDecision:
    """Whether a tool version may run on some datasets for a user, and why not."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)


def check_runnable(
    session: Session, version: ToolVersion, targets: Sequence[Dataset], user_id: int
) -> RunDecision:
    """The one place that decides whether a tool version may run on datasets: verified
    versions on any tier; drafts and versions in review only on synthetic datasets and only
    for their maintainer (the testing tier); deprecated versions never on real data. Whether
    the user may use each dataset is ``datasets.service.can_use_dataset``'s decision."""
    tool = tool_of(session, version)
    name = label(tool, version)
    reasons: list[str] = []
    for dataset in targets:
        where = f"{dataset.name} v{dataset.version}"
        real = dataset.tier == Tier.real
        if version.state == ToolState.verified:
            continue
        if version.state == ToolState.deprecated:
            if real:
                reasons.append(
                    f"{name} is deprecated ({version.deprecated_reason}); use "
                    f"{version.successor} on the real-tier dataset {where}"
                )
            continue
        if real:
            reasons.append(
                f"{name} is {version.state.value.replace('_', ' ')}, not verified: only "
                f"verified tools run on the real-tier dataset {where}"
            )
        elif user_id != tool.maintainer_id:
            reasons.append(
                f"{name} is not verified yet: only its maintainer may test it on the "
                f"synthetic dataset {where}"
            )
    if version.runtime == "bundle" and version.requirements is None:  # pragma: no cover
        reasons.append(f"{name} has no requirements file")
    return RunDecision(allowed=not reasons, reasons=reasons)
