"""Burned-in text check benchmark: what OCR costs per US/XA image, and that CT pays nothing.

Corpora (written once into the workdir): US fans and XA frames whose header says Burned In
Annotation NO and whose pixels show no text (the worst case: every reading pass runs), and
512x512 CT slices. Each is ingested in a fresh INSITU_HOME with INSITU_OCR=tesseract and with
INSITU_OCR=off (headers trusted: the baseline), best of ``--repeat`` runs each, beside a
`cp -r` + `sync` of the same files.

Usage: python bench/ocr_bench.py [--images 60] [--ct 200] [--workdir bench/out] [--repeat 2]
Prints a Markdown table for docs/benchmarks.md and writes ocr-results.json in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the generated set lives with the tests (tests/ingest)
BIN = Path(sys.executable).parent


def _risky_corpus(workdir: Path, images: int) -> Path:
    from tests.ingest.ocr_corpus import clean_case

    root = workdir / f"ocr-corpus-{images}"
    marker = workdir / f"ocr-corpus-{images}.complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for index in range(images):
        kind = "US" if index % 2 == 0 else "XA"
        ds = clean_case(kind, seed=1000 + index)
        ds.save_as(root / f"{kind}-{index:04d}.dcm", enforce_file_format=True)
    marker.write_text("ok")
    return root


def _ct_corpus(workdir: Path, files: int) -> Path:
    from insitu.ingest.corpus import generate_corpus

    root = workdir / f"ocr-ct-{files}"
    marker = workdir / f"ocr-ct-{files}.complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    generate_corpus(root, subjects=max(1, files // 100), ct_slices=min(files, 100), mr_slices=0)
    marker.write_text("ok")
    return root


def _cp_sync(corpus: Path, workdir: Path) -> float:
    target = workdir / "ocr-cp"
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(corpus), str(target)], check=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def _ingest(corpus: Path, workdir: Path, ocr: str) -> tuple[float, dict[str, int]]:
    home = workdir / "ocr-home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "INSITU_HOME": str(home), "INSITU_OCR": ocr}
    subprocess.run([str(BIN / "insitu"), "init"], check=True, env=env, stdout=subprocess.DEVNULL)
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "insitu"), "ingest", str(corpus), "--workers", "2", "--json"],
        env=env,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"insitu ingest failed ({done.returncode}): {done.stderr[-2000:]!r}")
    counts: dict[str, int] = json.loads(done.stdout)["counts"]
    return elapsed, counts


def _best(corpus: Path, workdir: Path, ocr: str, repeat: int) -> tuple[list[float], dict[str, int]]:
    runs = [_ingest(corpus, workdir, ocr) for _ in range(repeat)]
    return [round(t, 2) for t, _ in runs], runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--ct", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    risky = _risky_corpus(args.workdir, args.images)
    ct = _ct_corpus(args.workdir, args.ct)
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    for name, corpus in (("us_xa", risky), ("ct", ct)):
        files = sum(1 for _ in corpus.rglob("*.dcm"))
        cp = min(_cp_sync(corpus, args.workdir) for _ in range(args.repeat))
        on, counts_on = _best(corpus, args.workdir, "tesseract", args.repeat)
        off, counts_off = _best(corpus, args.workdir, "off", args.repeat)
        results[name] = {
            "files": files,
            "cp_sync_s": round(cp, 2),
            "ocr_on_runs_s": on,
            "ocr_off_runs_s": off,
            "counts_ocr_on": counts_on,
            "counts_ocr_off": counts_off,
            "images_per_s_ocr_on": round(files / min(on), 2),
            "ocr_s_per_image_per_core": round(2 * (min(on) - min(off)) / files, 3),
        }
    (args.workdir / "ocr-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print()
    columns = (
        "corpus",
        "files",
        "cp -r + sync (s)",
        "ingest, OCR off (s)",
        "ingest, OCR on (s)",
        "images/s with OCR",
        "OCR s per image and core",
    )
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for name in ("us_xa", "ct"):
        row: dict[str, Any] = results[name]  # type: ignore[assignment]
        print(
            f"| {name} | {row['files']} | {row['cp_sync_s']} | {min(row['ocr_off_runs_s'])} | "
            f"{min(row['ocr_on_runs_s'])} | {row['images_per_s_ocr_on']} | "
            f"{row['ocr_s_per_image_per_core']} |"
        )


if __name__ == "__main__":
    main()
