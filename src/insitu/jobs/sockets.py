"""The platform API inside a job: one Unix socket per running job, bound into its sandbox at
/run/insitu.sock and served by the same app, which there takes only that job's token (issued
when the job starts, revoked when it ends; see ``access.permissions._check_job_scope``).

The sockets live in the scheduler's process, so they reach jobs that run on the platform host
(the local backend, or Slurm on a one-node cluster)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import uvicorn

from insitu.core.platform import Platform

SOCKET_NAME = "insitu.sock"


class JobSockets:
    """Open and close the per-job API sockets."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._servers: dict[int, tuple[uvicorn.Server, threading.Thread]] = {}

    def open(self, job_id: int, owner_id: int, folder: Path) -> Path:
        """Serve the API for one job on ``folder/insitu.sock``; returns the socket path."""
        from insitu.web.app import create_app  # the app imports the jobs domain

        path = folder / SOCKET_NAME
        if job_id in self._servers:
            return path
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        app = create_app(self.platform, job_socket=job_id, job_owner=owner_id)
        server = uvicorn.Server(uvicorn.Config(app, uds=str(path), log_level="warning"))
        thread = threading.Thread(target=server.run, name=f"job-{job_id}-socket", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the API socket of job {job_id} did not start")
            time.sleep(0.01)
        path.chmod(0o666)  # the job user connects; only this job's sandbox sees the file
        self._servers[job_id] = (server, thread)
        return path

    def close(self, job_id: int) -> None:
        """Stop serving a job that ended."""
        entry = self._servers.pop(job_id, None)
        if entry is None:
            return
        server, thread = entry
        server.should_exit = True
        thread.join(timeout=5)

    def close_all(self) -> None:
        """Stop every socket (the scheduler stops)."""
        for job_id in list(self._servers):
            self.close(job_id)

    def open_jobs(self) -> set[int]:
        """Jobs whose socket is open."""
        return set(self._servers)
