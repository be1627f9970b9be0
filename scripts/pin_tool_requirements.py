"""Write a tool bundle's hash-pinned requirements.txt from top-level package names.

Downloads the wheels (only wheels) of the packages and all their dependencies with the
interpreter tool environments use (default /usr/bin/python3), and pins every one of them by
version and SHA-256. Usage:

    python scripts/pin_tool_requirements.py src/insitu/tools/examples/dataset-summary pydicom
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [args.python, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", folder,
             *args.packages],
            check=True,
        )  # fmt: skip
        lines = []
        for wheel in sorted(Path(folder).glob("*.whl")):
            name, version = wheel.name.split("-")[:2]
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            lines.append(f"{name.lower().replace('_', '-')}=={version} --hash=sha256:{digest}")
    target = args.bundle / "requirements.txt"
    target.write_text(
        f"# Pinned by scripts/pin_tool_requirements.py {' '.join(args.packages)}\n"
        + "\n".join(lines)
        + "\n"
    )
    print(f"{target}: {len(lines)} requirements", file=sys.stderr)


if __name__ == "__main__":
    main()
