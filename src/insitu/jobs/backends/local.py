"""The ``local`` backend: the sandbox on this host, one detached runner per job."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import asdict
from pathlib import Path

from insitu.jobs import runner
from insitu.jobs.backends.protocol import RunRequest, RunState, RunStatus


class LocalExecutor:
    """Runs jobs with bubblewrap on the platform host. Needs nothing but bubblewrap."""

    name = "local"
    can_run_images = False

    def prepare(self, request: RunRequest) -> str:
        """Write the job's spec into its folder (the reference is the folder)."""
        folder = request.folder
        folder.mkdir(parents=True, exist_ok=True)
        spec = asdict(request.spec)
        spec = {
            **spec,
            "tool": str(spec["tool"]) if spec["tool"] else None,
            "views": {k: str(v) for k, v in spec["views"].items()},
            "home": str(spec["home"]),
            "results": str(spec["results"]),
            "socket": str(spec["socket"]) if spec["socket"] else None,
        }
        document = {
            "sandbox": spec,
            "run": {"max_runtime_s": request.max_runtime_s, "job_user": request.job_user},
        }
        target = folder / runner.SPEC
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(document))
            tmp.replace(target)
        return str(folder)

    def start(self, reference: str) -> None:
        """Start the runner unless it started before."""
        folder = Path(reference)
        if runner.runner_alive(folder) is not None or (folder / runner.EXIT).exists():
            return
        runner.start_detached(folder)

    def status(self, reference: str) -> RunStatus:
        """From ``exit.json``, else from the runner's pid."""
        folder = Path(reference)
        exit_file = folder / runner.EXIT
        if exit_file.exists():
            ended = json.loads(exit_file.read_text())
            return RunStatus(
                RunState.exited,
                exit_code=ended["exit_code"],
                end_reason=ended["end_reason"],
                run_seconds=ended["run_seconds"],
                detail=ended.get("limits", ""),
            )
        alive = runner.runner_alive(folder)
        if alive is None:
            return RunStatus(RunState.pending)
        if alive:
            return RunStatus(RunState.running)
        if exit_file.exists():  # it finished between the two reads
            return self.status(reference)
        return RunStatus(RunState.lost, detail="the runner ended without an exit record")

    def cancel(self, reference: str) -> None:
        """Ask the runner to stop the job (it records 'killed_by_user')."""
        folder = Path(reference)
        (folder / runner.CANCEL).touch()
        if runner.runner_alive(folder):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int((folder / runner.PID).read_text()), signal.SIGCONT)

    def logs(self, reference: str) -> bytes:
        """The job's log file."""
        try:
            return (Path(reference) / runner.LOG).read_bytes()
        except FileNotFoundError:
            return b""

    def cleanup(self, reference: str) -> None:
        """Nothing to release: the runner removed the job's cgroup."""
