"""The checker process: ``python -m insitu.releases.checker`` reads the files to check and
the context as JSON on stdin and writes each file's findings as JSON on stdout.

Files from jobs are hostile input to parsers (zip bombs, crafted HDF5, huge pictures), so the
platform runs the checks in this separate process with memory and CPU limits
(:func:`run_checker`): if it dies, every file is refused and nothing is released.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insitu.releases.checks import (
    Check,
    CheckContext,
    Finding,
    Item,
    built_in,
    inspector,
    load_extra,
    sniff,
)
from insitu.releases.models import Verdict


@dataclass(frozen=True)
class FileToCheck:
    """A stored copy of a result file."""

    name: str
    path: Path
    size: int
    sha256: str


@dataclass
class FileResult:
    """What the checks found in one file."""

    name: str
    media_type: str
    findings: list[Finding]


class CheckerFailedError(RuntimeError):
    """The checker process died or ran out of time: nothing it was given may leave."""


def check_files(
    files: list[FileToCheck], context: CheckContext, checks: list[Check]
) -> list[FileResult]:
    """Run every check on every file (in this process)."""
    inspect = inspector(checks, context)
    results = []
    for wanted in files:
        item = Item(wanted.name, wanted.size, wanted.sha256, path=wanted.path)
        item.media_type = sniff(item.head(), wanted.name)
        results.append(FileResult(wanted.name, item.media_type, inspect(item)))
    return results


def _limits(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_checker(
    files: list[FileToCheck],
    context: CheckContext,
    extra_checks: str = "",
    memory_mb: int = 4096,
    timeout_s: int = 900,
) -> list[FileResult]:
    """Check the files in a child process with the given limits."""
    request = {
        "files": [
            {"name": f.name, "path": str(f.path), "size": f.size, "sha256": f.sha256} for f in files
        ],
        "context": context.to_json(),
        "extra_checks": extra_checks,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "insitu.releases.checker"],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=timeout_s,
            check=False,
            preexec_fn=lambda: _limits(memory_mb * 1024 * 1024, timeout_s),
        )
    except subprocess.TimeoutExpired:
        raise CheckerFailedError(f"the checks ran over {timeout_s} s") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["killed"]
        raise CheckerFailedError(f"the checks stopped (exit {done.returncode}: {tail[0][:300]})")
    return [
        FileResult(
            r["name"],
            r["media_type"],
            [Finding(f["check"], Verdict(f["verdict"]), f["reason"]) for f in r["findings"]],
        )
        for r in json.loads(done.stdout)
    ]


def main() -> None:
    """The child's side: JSON in, JSON out."""
    request: dict[str, Any] = json.load(sys.stdin)
    checks = built_in() + load_extra(request.get("extra_checks", ""))
    files = [
        FileToCheck(f["name"], Path(f["path"]), int(f["size"]), f["sha256"])
        for f in request["files"]
    ]
    results = check_files(files, CheckContext.from_json(request["context"]), checks)
    json.dump(
        [
            {
                "name": r.name,
                "media_type": r.media_type,
                "findings": [
                    {"check": f.check, "verdict": f.verdict.value, "reason": f.reason}
                    for f in r.findings
                ],
            }
            for r in results
        ],
        sys.stdout,
    )


if __name__ == "__main__":
    main()
