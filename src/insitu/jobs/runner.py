"""The job runner: a small detached process per job that starts the sandbox, enforces the time
limit, keeps the log and writes the job's end state to a file.

Because the end state lands in a file (``exit.json``) rather than in the scheduler's memory,
a restarted scheduler re-attaches to running jobs: it reads the runner's pid and that file.
The same runner is what the Slurm backend starts on a compute node.

Usage: python -m insitu.jobs.runner JOB_FOLDER  (the folder holds ``spec.json``)
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from insitu.jobs.sandbox import SandboxSpec, bwrap_args, create_cgroup, drop_to

SPEC = "spec.json"
EXIT = "exit.json"
PID = "runner.pid"
LOG = "log"
CANCEL = "cancel"
LOG_LIMIT = 64 * 1024 * 1024  # what the runner keeps at most; users see far less


def write_exit(
    folder: Path, exit_code: int | None, end_reason: str, run_seconds: float, limits: str
) -> None:
    """Record how a job ended (the file every backend's status reads)."""
    _write_atomically(
        folder / EXIT,
        {
            "exit_code": exit_code,
            "end_reason": end_reason,
            "run_seconds": round(run_seconds, 3),
            "limits": limits,
        },
    )


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(path)


def load_spec(folder: Path) -> tuple[SandboxSpec, dict[str, Any]]:
    """The sandbox spec and the run settings saved by the backend."""
    document = json.loads((folder / SPEC).read_text())
    sandbox = document["sandbox"]
    spec = SandboxSpec(
        job_id=sandbox["job_id"],
        user=sandbox["user"],
        command=sandbox["command"],
        tool=Path(sandbox["tool"]) if sandbox["tool"] else None,
        views={k: Path(v) for k, v in sandbox["views"].items()},
        home=Path(sandbox["home"]),
        results=Path(sandbox["results"]),
        cpus=sandbox["cpus"],
        memory_mb=sandbox["memory_mb"],
        pids=sandbox["pids"],
        scratch_mb=sandbox["scratch_mb"],
        gpus=sandbox["gpus"],
        env=sandbox["env"],
        socket=Path(sandbox["socket"]) if sandbox.get("socket") else None,
    )
    return spec, document["run"]


def run(folder: Path) -> int:
    """Run the job of a folder to its end; returns the runner's own exit status."""
    spec, settings = load_spec(folder)
    (folder / PID).write_text(str(os.getpid()))
    # Job ids repeat across deployments on one host (and test databases): add a random part.
    name = f"job-{spec.job_id}-{secrets.token_hex(4)}"
    cgroup = create_cgroup(name, spec.cpus, spec.memory_mb, spec.pids)
    limits = f"cgroup v{cgroup.version}" if cgroup else "rlimits (no cgroup could be made)"
    command = [*drop_to(settings["job_user"]), *bwrap_args(spec)]
    memory = spec.memory_mb * 1024 * 1024

    def confine() -> None:  # runs in the child before exec
        if cgroup is not None:
            cgroup.add(os.getpid())
        else:
            resource.setrlimit(resource.RLIMIT_AS, (memory * 2, memory * 2))
            resource.setrlimit(resource.RLIMIT_NPROC, (spec.pids, spec.pids))

    started = time.monotonic()
    end_reason = ""
    with (folder / LOG).open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=confine,  # noqa: PLW1509 - the runner is single-threaded
        )
        deadline = started + int(settings["max_runtime_s"])
        while process.poll() is None:
            if (folder / CANCEL).exists():
                end_reason = "killed_by_user"
            elif time.monotonic() > deadline:
                end_reason = "time_limit"
            elif log.tell() > LOG_LIMIT:
                end_reason = "log_limit"
            if end_reason:
                process.kill()
                if cgroup is not None:
                    cgroup.kill_all()
                process.wait()
                break
            time.sleep(0.05)
    code = process.returncode
    if cgroup is not None:
        cgroup.kill_all()  # nothing a job started survives it
        oom = cgroup.oom_killed()
        cgroup.remove()
    else:
        oom = False
    if not end_reason:
        end_reason = "out_of_memory" if oom else "exit_code"
        if code != 0 and not oom and _sandbox_refused(folder / LOG):
            end_reason = "sandbox_violation"
    write_exit(folder, code, end_reason, time.monotonic() - started, limits)
    return 0


def _sandbox_refused(log: Path) -> bool:
    """Whether bubblewrap itself refused to set the sandbox up (its messages start 'bwrap:')."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return False
    return any(line.startswith("bwrap: ") for line in tail.splitlines())


def start_detached(folder: Path) -> None:
    """Start the runner of a job folder, detached: it outlives the scheduler, whose restart
    finds it again through ``runner.pid`` and ``exit.json``."""
    with (folder / "runner.err").open("ab") as errors:
        subprocess.run(
            [sys.executable, "-m", "insitu.jobs.runner", "--detach", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            check=True,
        )


def runner_alive(folder: Path) -> bool | None:
    """Whether the runner of a job folder is alive (None: it never started)."""
    try:
        pid = int((folder / PID).read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and b"insitu.jobs.runner" in cmdline


def _detach_and_run(folder: Path) -> int:
    if os.fork() != 0:
        return 0  # the parent returns at once; the child is adopted by init
    os.setsid()
    try:
        run(folder)
    finally:
        os._exit(0)
    return 0  # pragma: no cover


if __name__ == "__main__":
    if sys.argv[1] == "--detach":
        sys.exit(_detach_and_run(Path(sys.argv[2])))
    sys.exit(run(Path(sys.argv[1])))
