"""Tool manifests (``insitu-tool.toml``) and bundles: strict validation when publishing.

A bundle is a folder: the manifest, the tool's files and, for the ``bundle`` runtime, a
hash-pinned requirements file. It travels and is stored as a deterministic tar archive (sorted
names, no owners, no times), so that the same folder always has the same SHA-256 digest.
"""

from __future__ import annotations

import io
import re
import tarfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.version import InvalidVersion, Version

MANIFEST_NAME = "insitu-tool.toml"
MAX_BUNDLE_BYTES = 200 * 1024**2
MAX_BUNDLE_FILES = 10_000
KINDS = ("batch", "interactive", "both")
FLAVORS = ("no-gpu", "small-gpu", "medium-gpu", "large-gpu")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")
_OCI_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+$")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest or bundle that cannot be published; the message names the field or file."""


@dataclass(frozen=True)
class OutputRule:
    """A file a tool writes to /results: a name or glob pattern, and its type."""

    pattern: str
    type: str


@dataclass(frozen=True)
class Manifest:
    """A validated ``insitu-tool.toml``."""

    name: str
    version: str
    summary: str
    license: str
    kind: str
    command: tuple[str, ...]
    min_flavor: str
    gpu: bool
    outputs: tuple[OutputRule, ...]
    runtime: str
    readme: str = ""
    requirements: str = ""
    image: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _field(data: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    name = f"{where}{key}"
    if key not in data:
        raise ManifestError(f"{MANIFEST_NAME}: {name} is missing")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise ManifestError(f"{MANIFEST_NAME}: {name} must be a non-empty {kind.__name__}")
    return value


def parse_manifest(text: str, files: Mapping[str, bytes]) -> Manifest:
    """Validate a manifest against the bundle's files (``files``: relative path → bytes)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not valid TOML: {exc}") from None
    name = _field(data, "name", str)
    if not _NAME.match(name):
        raise ManifestError(
            f"{MANIFEST_NAME}: name {name!r} must be 3-64 characters a-z, 0-9 and '-'"
        )
    version = _field(data, "version", str)
    try:
        normalised = str(Version(version))
    except InvalidVersion:
        raise ManifestError(
            f"{MANIFEST_NAME}: version {version!r} is not a valid version (e.g. 1.0.0, 2.1rc1)"
        ) from None
    if normalised != version:
        raise ManifestError(f"{MANIFEST_NAME}: write the version as {normalised!r}")
    kind = _field(data, "kind", str)
    if kind not in KINDS:
        raise ManifestError(f"{MANIFEST_NAME}: kind must be one of {', '.join(KINDS)}")
    command = _field(data, "command", list)
    if not all(isinstance(part, str) and part for part in command):
        raise ManifestError(f"{MANIFEST_NAME}: command must be a list of non-empty strings")
    resources = data.get("resources", {})
    min_flavor = resources.get("min_flavor", "no-gpu")
    if min_flavor not in FLAVORS:
        raise ManifestError(
            f"{MANIFEST_NAME}: resources.min_flavor must be one of {', '.join(FLAVORS)}"
        )
    gpu = resources.get("gpu", False)
    if not isinstance(gpu, bool):
        raise ManifestError(f"{MANIFEST_NAME}: resources.gpu must be true or false")
    if gpu and min_flavor == "no-gpu":
        raise ManifestError(f"{MANIFEST_NAME}: resources.gpu = true needs a GPU min_flavor")
    outputs = []
    for number, rule in enumerate(data.get("outputs", [])):
        where = f"outputs[{number}]."
        pattern = _field(rule, "pattern", str, where)
        if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
            raise ManifestError(f"{MANIFEST_NAME}: {where}pattern must be relative to /results")
        outputs.append(OutputRule(pattern, _field(rule, "type", str, where)))
    readme = data.get("readme", "")
    if readme and readme not in files:
        raise ManifestError(f"{MANIFEST_NAME}: readme {readme!r} is not in the bundle")
    runtime = _field(data, "runtime", dict)
    runtime_type = _field(runtime, "type", str, "runtime.")
    manifest_fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "summary": _field(data, "summary", str),
        "license": _field(data, "license", str),
        "kind": kind,
        "command": tuple(command),
        "min_flavor": min_flavor,
        "gpu": gpu,
        "outputs": tuple(outputs),
        "runtime": runtime_type,
        "readme": readme,
    }
    if runtime_type == "bundle":
        requirements = _field(runtime, "requirements", str, "runtime.")
        if requirements not in files:
            raise ManifestError(
                f"{MANIFEST_NAME}: runtime.requirements {requirements!r} is not in the bundle"
            )
        check_requirements(requirements, files[requirements].decode("utf-8", "replace"))
        manifest_fields["requirements"] = requirements
    elif runtime_type == "oci":
        image = _field(runtime, "image", str, "runtime.")
        if not _OCI_IMAGE.match(image):
            raise ManifestError(
                f"{MANIFEST_NAME}: runtime.image {image!r} must be pinned by digest: "
                "registry/name@sha256:<64 hex digits>"
            )
        manifest_fields["image"] = image
    else:
        raise ManifestError(f"{MANIFEST_NAME}: runtime.type must be 'bundle' or 'oci'")
    return Manifest(**manifest_fields)


def check_requirements(name: str, text: str) -> None:
    """Every requirement pinned with ``==`` and at least one ``--hash=sha256:``; no URLs,
    editables or options that would fetch or build anything else."""
    logical = re.sub(r"\\\n", " ", text)
    count = 0
    for number, raw in enumerate(logical.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        if requirement.startswith("-"):
            raise ManifestError(
                f"{name}, line {number}: option {requirement} is not allowed; list pinned "
                "requirements with hashes only (pip-compile --generate-hashes writes them)"
            )
        if not _PINNED.match(requirement.split(";")[0]):
            raise ManifestError(
                f"{name}, line {number}: {requirement!r} is not pinned: use name==version"
            )
        if not any(_HASH.fullmatch(option) for option in options):
            raise ManifestError(
                f"{name}, line {number}: {requirement} has no --hash=sha256:...; every "
                "requirement must be hash-pinned"
            )
        count += 1
    if count == 0:
        raise ManifestError(f"{name} lists no requirements")


# -- bundles as archives ------------------------------------------------------------------------


def pack_folder(folder: Path) -> bytes:
    """The deterministic tar archive of a bundle folder (regular files only)."""
    if not (folder / MANIFEST_NAME).is_file():
        raise ManifestError(f"{folder} has no {MANIFEST_NAME}: not a tool bundle")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise ManifestError(f"{relative} is a symbolic link: bundles hold files only")
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            data = path.read_bytes()
            info = tarfile.TarInfo(relative)
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(archive: bytes) -> dict[str, bytes]:
    """The files of a bundle archive, refusing links, absolute or '..' paths and oversize."""
    if len(archive) > MAX_BUNDLE_BYTES:
        raise ManifestError(f"the bundle is larger than {MAX_BUNDLE_BYTES // 1024**2} MiB")
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for member in tar:
                name = member.name
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts or not parts:
                    raise ManifestError(f"bundle entry {name!r} points outside the bundle")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ManifestError(f"bundle entry {name!r} is not a regular file")
                total += member.size
                if total > MAX_BUNDLE_BYTES or len(files) >= MAX_BUNDLE_FILES:
                    raise ManifestError("the bundle unpacks to too much: keep data out of it")
                handle = tar.extractfile(member)
                if handle is None:
                    raise ManifestError(f"bundle entry {name!r} cannot be read")
                files[str(PurePosixPath(name))] = handle.read()
    except tarfile.TarError as exc:
        raise ManifestError(f"the bundle is not a readable tar archive: {exc}") from None
    if MANIFEST_NAME not in files:
        raise ManifestError(f"the bundle has no {MANIFEST_NAME} at its top")
    return files
