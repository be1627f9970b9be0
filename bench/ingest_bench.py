"""Ingest benchmark: `insitu ingest` and `storescu` → `insitu dicom listen` beside baselines.

Runs on one corpus of synthetic 512x512 16-bit CT instances (2,000 by default, about 1 GB):
- baseline `cp -r` + `sync`, and GDCM's `gdcmanon` where it is installed;
- `insitu ingest` (full Table E.1-1, blob store, catalogue) in a fresh INSITU_HOME, with the
  peak RSS of its processes at half and full corpus size (memory must stay flat);
- DCMTK `storescu` (default settings) sending the corpus to `insitu dicom listen`.

Usage: python bench/ingest_bench.py [--files 2000] [--workdir bench/out] [--repeat 2]
Prints a Markdown table for docs/benchmarks.md and writes results.json in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SLICES_PER_SUBJECT = 100
STORESCU = ["storescu", "-aet", "BENCH", "-aec", "INSITU", "+sd", "+r", "127.0.0.1"]


def _corpus(workdir: Path, files: int) -> Path:
    root = workdir / f"corpus-{files}"
    marker = workdir / f"corpus-{files}.complete"  # outside the corpus: it is not DICOM
    if marker.exists():
        return root
    from insitu.ingest.corpus import generate_corpus

    shutil.rmtree(root, ignore_errors=True)
    subjects = max(1, files // SLICES_PER_SUBJECT)
    generate_corpus(root, subjects=subjects, ct_slices=files // subjects, mr_slices=0)
    marker.write_text("ok")
    return root


def _drop_caches() -> None:
    subprocess.run(["sync"], check=True)


def _timed(command: list[str], env: dict[str, str] | None = None) -> float:
    _drop_caches()
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _cp_sync(corpus: Path, workdir: Path) -> float:
    target = workdir / "cp-target"
    shutil.rmtree(target, ignore_errors=True)
    try:
        return _timed(["bash", "-c", f"cp -r '{corpus}' '{target}' && sync"])
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _gdcmanon(corpus: Path, workdir: Path) -> float | None:
    """GDCM's Basic Profile anonymiser (it needs a certificate: a throwaway one is made)."""
    if shutil.which("gdcmanon") is None or shutil.which("openssl") is None:
        return None
    target = workdir / "gdcmanon-target"
    cert = workdir / "gdcmanon-cert.pem"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=bench",
                "-days",
                "1",
                "-keyout",
                str(workdir / "gdcmanon-key.pem"),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    shutil.rmtree(target, ignore_errors=True)
    try:
        return _timed(
            [
                "bash",
                "-c",
                f"gdcmanon -c '{cert}' --continue -r -i '{corpus}' -o '{target}' && sync",
            ]
        )
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _fresh_home(workdir: Path, name: str) -> dict[str, str]:
    home = workdir / name
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "INSITU_HOME": str(home)}
    subprocess.run([str(BIN / "insitu"), "init"], check=True, env=env, stdout=subprocess.DEVNULL)
    return env


def _insitu_ingest(corpus: Path, workdir: Path) -> tuple[float, int]:
    env = _fresh_home(workdir, "home-ingest")
    _drop_caches()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "insitu"), "ingest", str(corpus), "--workers", "2", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"insitu ingest failed ({process.returncode}): {err[-2000:]!r}")
    report = json.loads(out)
    if report["counts"]["ingested"] != sum(1 for p in corpus.rglob("*.dcm")):
        raise RuntimeError(f"not everything was ingested: {report['counts']}")
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    return elapsed, peak


def _catalogued(home: Path) -> int:
    try:
        with sqlite3.connect(home / "insitu.db", timeout=30) as connection:
            return int(connection.execute("select count(*) from instances").fetchone()[0])
    except sqlite3.Error:
        return 0


def _storescu(corpus: Path, port: int) -> float:
    """Send the corpus with DCMTK storescu at its default settings; seconds until it exits."""
    started = time.perf_counter()
    subprocess.run(
        [*STORESCU, str(port), str(corpus)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after 60 s")


def _storescp_baseline(corpus: Path, workdir: Path) -> float | None:
    """DCMTK storescp writing what it receives to a folder: the peer tool's own pair."""
    if shutil.which("storescp") is None:
        return None
    target = workdir / "storescp-target"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    port = 12000 + os.getpid() % 1000
    receiver = subprocess.Popen(
        ["storescp", "-aet", "INSITU", "-od", str(target), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        _drop_caches()
        return _storescu(corpus, port)
    finally:
        receiver.terminate()
        receiver.wait(timeout=60)
        shutil.rmtree(target, ignore_errors=True)


def _storescu_listen(corpus: Path, workdir: Path, expected: int) -> tuple[float, float]:
    if shutil.which("storescu") is None:
        raise RuntimeError("storescu (DCMTK) is not installed: run ./scripts/bootstrap.sh")
    env = _fresh_home(workdir, "home-listen")
    port = 11000 + os.getpid() % 1000
    listener = subprocess.Popen(
        [str(BIN / "insitu"), "dicom", "listen", "--port", str(port), "--calling-ae", "BENCH"],
        env={**env, "INSITU_INGEST_WORKERS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        _drop_caches()
        started = time.perf_counter()
        delivered = _storescu(corpus, port)
        home = Path(env["INSITU_HOME"])
        while _catalogued(home) < expected:
            if time.perf_counter() - started > 300:
                raise RuntimeError("the listener did not catalogue everything within 300 s")
            time.sleep(0.2)
        return delivered, time.perf_counter() - started
    finally:
        listener.terminate()
        listener.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-listen", action="store_true")
    parser.add_argument("--only-listen", action="store_true", help="skip cp, gdcmanon, ingest")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(args.workdir, args.files)
    half = _corpus(args.workdir, args.files // 2)
    size = sum(p.stat().st_size for p in corpus.rglob("*.dcm"))
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "files": args.files,
        "bytes": size,
    }
    if not args.only_listen:
        _file_baselines_and_ingest(args, corpus, half, results)
    if not args.skip_listen:
        # Once: with Nagle's algorithm on both DCMTK ends it takes minutes and varies little.
        storescp = _storescp_baseline(corpus, args.workdir)
        runs = [_storescu_listen(corpus, args.workdir, args.files) for _ in range(args.repeat)]
        results.update(
            {
                "storescu_to_storescp_s": round(storescp, 2) if storescp else None,
                "storescu_delivery_s": round(min(d for d, _ in runs), 2),
                "storescu_delivery_runs_s": [round(d, 2) for d, _ in runs],
                "listen_catalogued_runs_s": [round(c, 2) for _, c in runs],
            }
        )
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print()
    _print_tables(results)


def _file_baselines_and_ingest(
    args: argparse.Namespace, corpus: Path, half: Path, results: dict[str, object]
) -> None:
    cp = min(_cp_sync(corpus, args.workdir) for _ in range(args.repeat))
    gdcm = _gdcmanon(corpus, args.workdir)
    ingest_runs = [_insitu_ingest(corpus, args.workdir) for _ in range(args.repeat)]
    _, peak_half = _insitu_ingest(half, args.workdir)
    results.update(
        {
            "cp_sync_s": round(cp, 2),
            "gdcmanon_s": round(gdcm, 2) if gdcm else None,
            "insitu_ingest_s": round(min(t for t, _ in ingest_runs), 2),
            "insitu_ingest_runs_s": [round(t, 2) for t, _ in ingest_runs],
            "peak_rss_mb_full": round(max(p for _, p in ingest_runs) / 1024, 1),
            "peak_rss_mb_half": round(peak_half / 1024, 1),
        }
    )


def _print_tables(results: dict[str, Any]) -> None:
    if "cp_sync_s" in results:
        cp = results["cp_sync_s"]
        print("| tool | time (s) | ratio to cp -r + sync |")
        print("|---|---|---|")
        print(f"| `cp -r` + `sync` | {cp:.2f} | 1.00 |")
        gdcm = results["gdcmanon_s"]
        if gdcm:
            print(f"| `gdcmanon` | {gdcm:.2f} | {gdcm / cp:.2f} |")
        ingest = results["insitu_ingest_s"]
        print(f"| `insitu ingest` (2 workers) | {ingest:.2f} | {ingest / cp:.2f} |")
    if "storescu_delivery_s" in results:
        print()
        print("| sender → receiver | delivered (s) | all catalogued (s) |")
        print("|---|---|---|")
        if results["storescu_to_storescp_s"]:
            print(f"| `storescu` → `storescp` (DCMTK) | {results['storescu_to_storescp_s']} | |")
        for delivered, catalogued in zip(
            results["storescu_delivery_runs_s"], results["listen_catalogued_runs_s"], strict=True
        ):
            print(f"| `storescu` → `insitu dicom listen` | {delivered} | {catalogued} |")


if __name__ == "__main__":
    main()
