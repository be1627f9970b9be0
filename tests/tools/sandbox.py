"""Run a command the way a job will: bubblewrap, uid 65534, no network, the host's /usr
read-only, a tool environment read-only at /opt/tool, optional extra binds."""

from __future__ import annotations

import subprocess
from pathlib import Path

from insitu.tools.environment import BWRAP


def run_like_a_job(
    environment: Path,
    command: list[str],
    read_only: dict[str, Path] | None = None,
    writable: dict[str, Path] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The finished process (stdout and stderr captured as text)."""
    args = [
        BWRAP, "--unshare-all", "--die-with-parent", "--new-session",
        "--uid", "65534", "--gid", "65534",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--ro-bind", str(environment), "/opt/tool",
    ]  # fmt: skip
    for target, source in (read_only or {}).items():
        args += ["--ro-bind", str(source), target]
    for target, source in (writable or {}).items():
        args += ["--bind", str(source), target]
    args += ["--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin"]
    for key, value in (env or {}).items():
        args += ["--setenv", key, value]
    return subprocess.run(
        [*args, "--", *command], capture_output=True, text=True, timeout=600, check=False
    )
