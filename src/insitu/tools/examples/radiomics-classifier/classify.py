"""radiomics-classifier: intensity and shape features, a grouped cross-validated classifier."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import joblib
import matplotlib.pyplot as plt
import numpy as np
import pydicom
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ("mean", "std", "p10", "p50", "p90", "area", "centroid_offset", "extent", "is_ct")


def dataset_folders() -> list[Path]:
    """The datasets given to the job: $INSITU_DATASETS, else every folder under /data."""
    given = os.environ.get("INSITU_DATASETS", "")
    if given:
        return [Path(p) for p in given.split(":") if p]
    return sorted(p for p in Path("/data").iterdir() if p.is_dir())


def features(path: Path) -> list[float]:
    """Simple intensity and shape features of one image (the first frame)."""
    image = pydicom.dcmread(path)
    pixels = image.pixel_array.astype(np.float64)
    if pixels.ndim == 3 and int(image.get("SamplesPerPixel", 1)) == 1:
        pixels = pixels[0]
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)
    pixels = pixels * float(image.get("RescaleSlope", 1)) + float(image.get("RescaleIntercept", 0))
    mask = pixels > pixels.mean()
    rows, columns = np.nonzero(mask)
    height, width = pixels.shape
    if rows.size:
        centroid = np.hypot(rows.mean() / height - 0.5, columns.mean() / width - 0.5)
        extent = (np.ptp(rows) + 1) * (np.ptp(columns) + 1) / (height * width)
    else:
        centroid, extent = 0.0, 0.0
    p10, p50, p90 = np.percentile(pixels, [10, 50, 90])
    return [
        float(pixels.mean()),
        float(pixels.std()),
        float(p10),
        float(p50),
        float(p90),
        float(mask.mean()),
        float(centroid),
        float(extent),
        1.0 if str(image.get("Modality", "")) == "CT" else 0.0,
    ]


def load(label: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Features, labels and subject of every image whose subject has the label."""
    samples: list[list[float]] = []
    labels: list[str] = []
    subjects: list[str] = []
    for folder in dataset_folders():
        with (folder / "clinical.csv").open(newline="") as handle:
            clinical = {row["subject"]: row for row in csv.DictReader(handle)}
        with (folder / "manifest.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                value = (clinical.get(row["subject"]) or {}).get(label, "")
                if not value or row["modality"] not in ("CT", "MR"):
                    continue
                samples.append(features(folder / row["path"]))
                labels.append(value)
                subjects.append(row["subject"])
    return np.array(samples), labels, subjects


def main() -> int:
    """Train, evaluate held out by subject, and write metrics.json, roc.png, model.joblib."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="sex", help="a column of clinical.csv")
    args = parser.parse_args()
    results = Path(os.environ.get("INSITU_RESULTS", "/results"))
    x, labels, subjects = load(args.label)
    classes = sorted(set(labels))
    if len(classes) != 2:
        print(f"--label {args.label}: needs exactly two classes, found {classes}", file=sys.stderr)
        return 2
    y = np.array([classes.index(v) for v in labels])
    folds = min(5, len(set(subjects)))
    if folds < 2:
        print("needs images of at least two subjects", file=sys.stderr)
        return 2
    held_out = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups=subjects):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        if len(set(y[train])) < 2:  # a fold whose training subjects share one class
            held_out[test] = y[train].mean()
            continue
        model.fit(x[train], y[train])
        held_out[test] = model.predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y, held_out))
    false_positive, true_positive, _ = roc_curve(y, held_out)
    final = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    metrics = {
        "label": args.label,
        "classes": classes,
        "samples": len(y),
        "subjects": len(set(subjects)),
        "folds": folds,
        "features": list(FEATURES),
        "roc_auc": round(auc, 4),
        "accuracy": round(float(accuracy_score(y, held_out >= 0.5)), 4),
        "evaluation": "grouped cross-validation: each prediction from a model that never saw "
        "that subject",
    }
    (results / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    figure, axes = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    axes.plot(false_positive, true_positive, label=f"held out, AUC {auc:.2f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(f"ROC: {args.label} = {classes[1]}")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(results / "roc.png")
    joblib.dump(final, results / "model.joblib")
    print(json.dumps(metrics), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
