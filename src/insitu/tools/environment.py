"""Tool environments: a bundle's Python environment, built once per tool version inside a
bubblewrap sandbox and reused by every job after.

The build runs as an unprivileged user (uid 65534 in a user namespace, no capabilities) with
only the host's ``/usr`` (read-only), the bundle's files and, when set, the local wheel folder
in view; the target folder is bound at ``/opt/tool``, where jobs mount it read-only later, so
the venv's paths stay valid. No dataset, blob store, database or secret is in view; the
network is cut unless a package index is configured. pip runs with ``--only-binary=:all:
--require-hashes``: nothing is built from source and nothing unpinned is installed.

Layout of a built environment: ``<tools root>/<digest>/{app/, venv/, BUILD.txt}``, made
read-only and renamed into place, so it exists complete or not at all.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from insitu.settings import Settings
from insitu.storage.protocol import check_digest

BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"
BUILD_TIMEOUT_S = 900
MOUNT_POINT = "/opt/tool"


class EnvironmentBuildError(RuntimeError):
    """pip (or the sandbox) refused to build the environment; the message has pip's reason."""


@dataclass(frozen=True)
class BuildSettings:
    """Where environments go and what they install from."""

    root: Path
    python: str = "/usr/bin/python3"
    wheel_dir: Path | None = None
    index_url: str = ""


@dataclass(frozen=True)
class Environment:
    """A built environment; ``built`` says whether this call built it (False: reused)."""

    path: Path
    built: bool
    seconds: float = 0.0


def build_settings(settings: Settings) -> BuildSettings:
    """The deployment's tool environment settings."""
    return BuildSettings(
        root=settings.resolved_tools_root,
        python=settings.tool_python,
        wheel_dir=settings.tool_wheel_dir,
        index_url=settings.tool_index_url,
    )


def environment_path(settings: BuildSettings, digest: str) -> Path:
    """Where the environment of a tool version lies (it may not be built yet)."""
    return settings.root / check_digest(digest)


def _sandbox(staging: Path, settings: BuildSettings, command: list[str]) -> list[str]:
    args = [
        BWRAP,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--uid", "65534",
        "--gid", "65534",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--ro-bind-try", "/etc/ssl", "/etc/ssl",
        "--ro-bind-try", "/etc/ca-certificates", "/etc/ca-certificates",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",  # noqa: S108 - the sandbox's own empty tmpfs
        "--bind", str(staging), MOUNT_POINT,
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",  # noqa: S108 - the sandbox's own empty tmpfs
        "--setenv", "PIP_NO_CACHE_DIR", "1",
        "--setenv", "PIP_DISABLE_PIP_VERSION_CHECK", "1",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]  # fmt: skip
    if settings.wheel_dir is not None:
        args += ["--ro-bind", str(settings.wheel_dir), "/wheels"]
    elif settings.index_url:
        args += ["--share-net", "--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    return [*args, "--", *command]


def _pip_source(settings: BuildSettings) -> list[str]:
    if settings.wheel_dir is not None:
        return ["--no-index", "--find-links", "/wheels"]
    if settings.index_url:
        return ["--index-url", settings.index_url]
    raise EnvironmentBuildError(
        "tool environments need INSITU_TOOL_WHEEL_DIR (a local wheel folder) or "
        "INSITU_TOOL_INDEX_URL (a package index)"
    )


def _run(staging: Path, settings: BuildSettings, command: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            _sandbox(staging, settings, command),
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise EnvironmentBuildError(
            f"bubblewrap is not installed ({BWRAP}): apt install bubblewrap"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentBuildError(f"{what} took longer than {BUILD_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = " | ".join(line.strip() for line in lines if "ERROR" in line) or " | ".join(
            lines[-5:]
        )
        raise EnvironmentBuildError(f"{what} failed: {reason[:1500]}")


def ensure_environment(
    settings: BuildSettings, digest: str, files: Mapping[str, bytes], requirements: str
) -> Environment:
    """The environment of a bundle version: reused when built, else built in the sandbox."""
    final = environment_path(settings, digest)
    if (final / "BUILD.txt").is_file():
        return Environment(final, built=False)
    started = time.perf_counter()
    settings.root.mkdir(parents=True, exist_ok=True)
    staging = settings.root / f".building-{digest[:16]}-{secrets.token_hex(6)}"
    app = staging / "app"
    try:
        for relative, data in files.items():
            target = app / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        _run(
            staging,
            settings,
            [settings.python, "-m", "venv", "--without-pip", f"{MOUNT_POINT}/venv"],
            "creating the virtual environment",
        )
        _run(
            staging,
            settings,
            [
                settings.python,
                "-m",
                "pip",
                "--python",
                f"{MOUNT_POINT}/venv/bin/python",
                "install",
                "--only-binary=:all:",
                "--require-hashes",
                *_pip_source(settings),
                "-r",
                f"{MOUNT_POINT}/app/{requirements}",
            ],
            "installing the requirements (pip --only-binary=:all: --require-hashes; only "
            "wheels are used, so a package with no wheel for this platform, or a source-only "
            "one, cannot be installed)",
        )
        (staging / "BUILD.txt").write_text(
            f"tool bundle sha256 {digest}\npython {settings.python}\nbuilt in a bubblewrap "
            "sandbox with pip --only-binary=:all: --require-hashes\n"
        )
        for folder, dirs, names in os.walk(staging, topdown=False):
            for name in names:
                path = Path(folder) / name
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode & 0o555)
            for name in dirs:
                (Path(folder) / name).chmod(0o555)
        staging.chmod(0o555)
        try:
            staging.rename(final)
        except OSError:
            if not (final / "BUILD.txt").is_file():
                raise
            _remove(staging)  # another process built the same version first
    except BaseException:
        if staging.exists():
            _remove(staging)
        raise
    return Environment(final, built=True, seconds=time.perf_counter() - started)


def _remove(path: Path) -> None:
    for folder, _dirs, _files in os.walk(path):
        Path(folder).chmod(0o700)
    shutil.rmtree(path)
