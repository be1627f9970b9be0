"""The job sandbox: one bubblewrap command line, the same on every backend, and resource limits
through the cgroup controllers the host has.

- Started as a dedicated unprivileged host user (``INSITU_JOB_USER``) when insitu runs as
  root, so a job never holds root on the host; inside, an unprivileged uid in a user
  namespace of its own, every capability dropped, a new session, no further user namespaces.
- Network, PID, IPC and UTS namespaces of its own: no network at all, not even loopback.
- Read-only: the dataset views and ``/opt/tool``; writable: the user's home, ``/results`` and a
  size-capped tmpfs ``/scratch``; a minimal ``/dev``; the host's ``/usr`` read-only (the
  interpreter). Host ``/run``, ``/tmp``, ``/var``, ``/etc`` and INSITU_HOME are never bound.
- Limits: memory, CPU and process count in a cgroup (v2 where mounted, else v1 ``memory``,
  ``cpu`` and ``pids``); the time limit is a watchdog in the runner.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from dataclasses import dataclass, field
from pathlib import Path

BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"
CGROUP_ROOT = Path("/sys/fs/cgroup")
JOB_UID = 1000  # the uid a job sees inside its user namespace


class SandboxError(RuntimeError):
    """The sandbox cannot be set up; the job does not run (there is no unsandboxed fallback)."""


@dataclass
class SandboxSpec:
    """Everything the sandbox of one job needs."""

    job_id: int
    user: str
    command: list[str]
    tool: Path | None
    views: dict[str, Path]
    """Mount point name below /data → view folder."""
    home: Path
    results: Path
    cpus: int = 1
    memory_mb: int = 2048
    pids: int = 512
    scratch_mb: int = 1024
    gpus: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    socket: Path | None = None
    """The platform API's Unix socket for this job, bound at /run/insitu.sock."""


def bwrap_args(spec: SandboxSpec) -> list[str]:
    """The bubblewrap command line of a job."""
    home = f"/home/{spec.user}"
    args = [
        BWRAP,
        "--unshare-user", "--uid", str(JOB_UID), "--gid", str(JOB_UID),
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--hostname", f"job-{spec.job_id}",
        "--cap-drop", "ALL", "--new-session", "--die-with-parent", "--disable-userns",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
        "--proc", "/proc", "--dev", "/dev",
        "--tmpfs", "/tmp",  # noqa: S108 - the job's own empty tmpfs, not the host's
        "--size", str(spec.scratch_mb * 1024 * 1024), "--tmpfs", "/scratch",
        "--dir", "/data",
    ]  # fmt: skip
    for mount, folder in sorted(spec.views.items()):
        args += ["--ro-bind", str(folder), f"/data/{mount}"]
    if spec.tool is not None:
        args += ["--ro-bind", str(spec.tool), "/opt/tool"]
    args += ["--bind", str(spec.home), home, "--bind", str(spec.results), "/results"]
    if spec.socket is not None:
        args += ["--dir", "/run", "--bind", str(spec.socket), "/run/insitu.sock"]
    for index in spec.gpus:
        for device in (f"/dev/nvidia{index}", "/dev/nvidiactl", "/dev/nvidia-uvm"):
            if Path(device).exists():
                args += ["--dev-bind", device, device]
    environment = {
        "HOME": home,
        "USER": spec.user,
        "PATH": "/opt/tool/venv/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "INSITU_JOB_ID": str(spec.job_id),
        "INSITU_DATASETS": ":".join(f"/data/{m}" for m in sorted(spec.views)),
        "INSITU_RESULTS": "/results",
        "TMPDIR": "/scratch",
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in spec.gpus),
        **spec.env,
    }
    args += ["--clearenv"]
    for key, value in environment.items():
        args += ["--setenv", key, value]
    args += ["--chdir", home, "--", *spec.command]
    return args


def drop_to(user: str) -> list[str]:
    """The prefix that starts the sandbox as the job user when running as root ([] else)."""
    if os.geteuid() != 0:
        return []
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SandboxError(
            f"the job user {user!r} does not exist: create it (useradd --system "
            f"--no-create-home {user}) or set INSITU_JOB_USER"
        ) from None
    if entry.pw_uid == 0:
        raise SandboxError(f"INSITU_JOB_USER {user!r} is root: jobs must not start as root")
    return [
        "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--",
    ]  # fmt: skip


def job_user_ids(user: str) -> tuple[int, int] | None:
    """The uid and gid the sandbox starts as, when insitu runs as root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


# -- cgroups -------------------------------------------------------------------------------------


@dataclass
class Cgroup:
    """The cgroup folders of one job (one for v2; one per controller for v1)."""

    folders: list[Path]
    version: int

    def add(self, pid: int) -> None:
        """Move a process (and its future children) in."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def oom_killed(self) -> bool:
        """Whether the memory limit killed something."""
        for folder in self.folders:
            events = folder / "memory.events"
            if events.exists():
                for line in events.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            failcnt = folder / "memory.failcnt"
            if failcnt.exists() and "memory" in folder.parts and int(failcnt.read_text()) > 0:
                return True
        return False

    def kill_all(self) -> None:
        """Kill every process left in the job's cgroups."""
        import signal

        for folder in self.folders:
            kill = folder / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
                continue
            procs = folder / "cgroup.procs"
            if procs.exists():
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        """Remove the folders (once empty)."""
        for folder in self.folders:
            with contextlib.suppress(OSError):
                folder.rmdir()


def create_cgroup(name: str, cpus: int, memory_mb: int, pids: int) -> Cgroup | None:
    """A cgroup with the limits, or None where insitu may not create cgroups (not root, or
    none delegated); the runner then falls back to rlimits and says so in the job."""
    memory = memory_mb * 1024 * 1024
    unified = CGROUP_ROOT / "cgroup.controllers"
    try:
        if unified.exists():  # v2 mounted at the root
            folder = CGROUP_ROOT / "insitu" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "memory.max").write_text(str(memory))
            with contextlib.suppress(OSError):
                (folder / "memory.swap.max").write_text("0")
            (folder / "cpu.max").write_text(f"{cpus * 100000} 100000")
            (folder / "pids.max").write_text(str(pids))
            return Cgroup([folder], 2)
        folders = []
        limits = {
            "memory": {"memory.limit_in_bytes": str(memory)},
            "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": str(cpus * 100000)},
            "pids": {"pids.max": str(pids)},
        }
        for controller, values in limits.items():
            folder = CGROUP_ROOT / controller / "insitu" / name
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in values.items():
                (folder / key).write_text(value)
            swap = folder / "memory.memsw.limit_in_bytes"
            if swap.exists():
                with contextlib.suppress(OSError):
                    swap.write_text(str(memory))
            folders.append(folder)
        return Cgroup(folders, 1)
    except OSError:
        return None
