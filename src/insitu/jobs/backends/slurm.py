"""The ``slurm`` backend: ``sbatch`` one batch script per job that starts the same runner (and
so the same sandbox) on the compute node; the runner writes the job's end state to a file,
since ``sacct`` needs slurmdbd. Status comes from that file and ``squeue``; cancel uses the
runner's cancel marker and ``scancel``.

The job folder must be on storage the compute nodes share with the platform host (as must
INSITU_HOME's views and tools): on a one-node cluster it is simply the same disk.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from insitu.jobs import runner
from insitu.jobs.backends.local import LocalExecutor
from insitu.jobs.backends.protocol import RunRequest, RunState, RunStatus

SLURM_ID = "slurm.id"
_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}


class SlurmError(RuntimeError):
    """A Slurm command failed; the message has its output."""


class SlurmExecutor:
    """Runs jobs through Slurm's command-line tools (``SLURM_CONF`` picks the cluster)."""

    name = "slurm"
    can_run_images = False

    def __init__(self, slurm_conf: str = "", partitions: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **({"SLURM_CONF": slurm_conf} if slurm_conf else {})}
        self.partitions = partitions or {}
        self._files = LocalExecutor()  # the spec, log and exit files are the local ones

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                list(args), capture_output=True, text=True, env=self.env, timeout=60, check=False
            )
        except FileNotFoundError as exc:
            raise SlurmError(f"{args[0]} is not installed (apt install slurm-client)") from exc
        if done.returncode != 0:
            raise SlurmError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[:500]}")
        return done.stdout.strip()

    def prepare(self, request: RunRequest) -> str:
        """The job folder with its spec and a batch script that starts the runner."""
        reference = self._files.prepare(request)
        folder = Path(reference)
        spec = request.spec
        # One partition per flavor, named after it unless the deployment maps it.
        flavor_partition = self.partitions.get(request.flavor, request.flavor)
        minutes = math.ceil(request.max_runtime_s / 60) + 1  # the runner's own limit is exact
        lines = [
            "#!/bin/sh",
            f"#SBATCH --job-name=insitu-{spec.job_id}",
            f"#SBATCH --time={minutes}",
            f"#SBATCH --mem={spec.memory_mb + 256}",
            f"#SBATCH --cpus-per-task={spec.cpus}",
            f"#SBATCH --output={folder / 'slurm.out'}",
        ]
        if flavor_partition:
            lines.append(f"#SBATCH --partition={flavor_partition}")
        if spec.gpus:  # a MIG profile is a GRES type where the site configures one (untested)
            kind = f"gpu:{request.mig_profile}" if request.mig_profile else "gpu"
            lines.append(f"#SBATCH --gres={kind}:{len(spec.gpus)}")
        lines.append(f"exec {sys.executable} -m insitu.jobs.runner {folder}")
        script = folder / "job.sbatch"
        if not script.exists():
            script.write_text("\n".join(lines) + "\n")
        return reference

    def start(self, reference: str) -> None:
        """sbatch, once (the Slurm job id is kept in the folder)."""
        folder = Path(reference)
        if (folder / SLURM_ID).exists():
            return
        slurm_id = self._run("sbatch", "--parsable", str(folder / "job.sbatch"))
        (folder / SLURM_ID).write_text(slurm_id.split(";")[0])

    def _slurm_state(self, folder: Path) -> str | None:
        try:
            slurm_id = (folder / SLURM_ID).read_text().strip()
        except FileNotFoundError:
            return None
        state = self._run("squeue", "--noheader", "--states=all", "-j", slurm_id, "-o", "%T")
        return state.splitlines()[0].strip() if state else "GONE"

    def status(self, reference: str) -> RunStatus:
        """The runner's exit file first; else what Slurm says."""
        folder = Path(reference)
        if (folder / runner.EXIT).exists():
            return self._files.status(reference)
        state = self._slurm_state(folder)
        if state is None or state in _PENDING:
            return RunStatus(RunState.pending, detail=state or "")
        if state in _RUNNING:
            return RunStatus(RunState.running, detail=state)
        if (folder / runner.EXIT).exists():  # it ended between the two reads
            return self._files.status(reference)
        return RunStatus(RunState.lost, detail=f"Slurm says {state} and the runner left no record")

    def cancel(self, reference: str) -> None:
        """A pending job is cancelled in Slurm; a running one by its runner."""
        folder = Path(reference)
        (folder / runner.CANCEL).touch()
        state = self._slurm_state(folder)
        if state in _PENDING:
            self._run("scancel", (folder / SLURM_ID).read_text().strip())
            runner.write_exit(folder, None, "killed_by_user", 0.0, "cancelled while pending")

    def logs(self, reference: str) -> bytes:
        """The runner's log (on shared storage)."""
        return self._files.logs(reference)

    def cleanup(self, reference: str) -> None:
        """Nothing held: Slurm forgets ended jobs itself."""
