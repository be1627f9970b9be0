"""dataset-summary: series and instances per modality, from the DICOM headers."""

from __future__ import annotations

import csv
import os
import sys
from collections import defaultdict
from pathlib import Path

import pydicom


def dataset_folders() -> list[Path]:
    """The datasets given to the job: $INSITU_DATASETS, else every folder under /data."""
    given = os.environ.get("INSITU_DATASETS", "")
    if given:
        return [Path(p) for p in given.split(":") if p]
    return sorted(p for p in Path("/data").iterdir() if p.is_dir())


def main() -> int:
    """Write summary.csv; return the exit status."""
    results = Path(os.environ.get("INSITU_RESULTS", "/results"))
    rows = []
    for folder in dataset_folders():
        with (folder / "manifest.csv").open(newline="") as handle:
            paths = [row["path"] for row in csv.DictReader(handle)]
        series: dict[str, set[str]] = defaultdict(set)
        instances: dict[str, int] = defaultdict(int)
        for relative in paths:
            header = pydicom.dcmread(folder / relative, stop_before_pixels=True)
            modality = str(header.get("Modality", "") or "unknown")
            series[modality].add(str(header.SeriesInstanceUID))
            instances[modality] += 1
        for modality in sorted(instances):
            rows.append([folder.name, modality, len(series[modality]), instances[modality]])
        print(f"{folder.name}: {len(paths)} instances read", file=sys.stderr)
    with (results / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "modality", "series", "instances"])
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
