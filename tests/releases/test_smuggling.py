"""Each way of smuggling data out through /results is caught by the checks, and honest results
pass. The results are real files in a job folder; ``collect`` runs the real checker process."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.releases.conftest import Desk, DeskFactory, refused_by, verdicts


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _windowed(pixels: np.ndarray) -> np.ndarray:
    low, high = float(pixels.min()), float(pixels.max())
    return ((pixels - low) / max(high - low, 1) * 255).astype(np.uint8)


def _plot() -> bytes:
    """A colour plot, the size matplotlib makes by default (640x480)."""
    canvas = np.full((480, 640, 3), 255, dtype=np.uint8)
    canvas[np.arange(40, 440), np.arange(100, 500)] = (31, 119, 180)  # the ROC curve
    canvas[440, 100:600] = 0
    return _png(canvas)


HONEST = {
    "metrics.json": json.dumps({"auc": 0.81, "accuracy": 0.75, "folds": 5}).encode(),
    "roc.png": _plot(),
    "model.joblib": pickle.dumps({"coef": [0.1, -0.3, 2.0], "classes": ["F", "M"]}),
}


def test_a_renamed_dicom_file_is_refused(desk: Desk) -> None:
    request = desk.request(desk.collect(desk.job({"notes.txt": desk.instance()})))
    assert request["state"] == "refused"
    assert {"dicom", "instance-copy"} <= refused_by(request, "notes.txt")
    assert "application/dicom" in [f["media_type"] for f in request["files"]]
    assert "notes.txt" in request["reason"]
    assert "run it again" in request["reason"]


def test_dicom_without_its_preamble_is_still_dicom(desk: Desk) -> None:
    headless = desk.instance()[132:]  # no preamble, no DICM: starts at the meta group
    request = desk.request(desk.collect(desk.job({"blob.bin": headless})))
    assert "dicom" in refused_by(request, "blob.bin")


def test_a_dicom_file_inside_a_zip_is_refused(desk: Desk) -> None:
    archive = _zip({"README.md": b"# results\n", "figures/slice.bin": desk.instance("MR")})
    request = desk.request(desk.collect(desk.job({"results.zip": archive})))
    assert request["state"] == "refused"
    assert refused_by(request, "results.zip") == {"archive"}
    item = request["files"][0]
    reason = next(c["reason"] for c in item["checks"] if c["check"] == "archive")
    assert "figures/slice.bin" in reason
    assert "DICOM" in reason


def test_an_npy_of_a_slice_is_refused_exact_or_rescaled(desk: Desk) -> None:
    pixels = desk.pixels()
    files = {
        "slice.npy": _npy(pixels),  # the stored values
        "slice_int32.npy": _npy(pixels.astype(np.int32).T.copy()),  # other type, transposed
        "hu.npy": _npy(pixels.astype(np.float64) * 1.0 - 1024.0),  # modality values
        "volume.npz": _zip({"a.npy": _npy(np.stack([pixels, pixels]))}),
    }
    request = desk.request(desk.collect(desk.job(files)))
    for name in files:
        assert refused_by(request, name), name
    reasons = {f["path"]: " ".join(c["reason"] for c in f["checks"]) for f in request["files"]}
    assert "exact pixel values" in reasons["slice.npy"]
    assert "exact pixel values" in reasons["slice_int32.npy"]


def test_a_full_resolution_png_of_a_slice_is_refused(desk: Desk) -> None:
    pixels = desk.pixels()
    request = desk.request(desk.collect(desk.job({"figure.png": _png(_windowed(pixels))})))
    assert refused_by(request, "figure.png") == {"pixel-arrays"}


def test_a_csv_of_all_uids_is_refused(desk: Desk) -> None:
    from sqlalchemy import select

    from insitu.catalog.models import Instance, Series, Study, Subject
    from insitu.db import session_scope

    with session_scope(desk.platform.sessions) as session:
        rows = session.execute(
            select(Subject.pseudonym, Study.study_instance_uid, Series.series_instance_uid,
                   Instance.sop_instance_uid)
            .join(Study, Study.subject_id == Subject.id)
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
        ).all()  # fmt: skip
    table = "subject,study,series,instance,prediction\n" + "".join(
        f"{a},{b},{c},{d},0.5\n" for a, b, c, d in rows
    )
    few = "subject,prediction\n" + f"{rows[0][0]},0.5\n"  # one identifier: under the limit
    request = desk.request(desk.collect(desk.job({"per_image.csv": table.encode(),
                                                  "worst.csv": few.encode()})))  # fmt: skip
    assert refused_by(request, "per_image.csv") == {"identifiers"}
    assert "identifiers" not in refused_by(request, "worst.csv")


def test_files_over_the_limits_are_refused(make_desk: DeskFactory) -> None:
    desk = make_desk(release_max_file_mb=1, release_max_request_mb=2)
    rng = np.random.default_rng(1)
    big = rng.bytes(1536 * 1024)
    parts = {f"part{i}.bin": rng.bytes(900 * 1024) for i in range(3)}
    job = desk.job({"big.bin": big, **parts})
    request = desk.request(desk.collect(job))
    assert refused_by(request, "big.bin") == {"size"}
    assert refused_by(request, "part2.bin") == {"request-size"}
    assert verdicts(request)["part0.bin"] != "refuse"
    stored = desk.platform.settings.resolved_releases_root / str(request["id"])
    assert sorted(p.stat().st_size for p in stored.iterdir()) == [900 * 1024] * 2  # never copied


def test_links_in_results_are_refused_whatever_they_point_to(desk: Desk) -> None:
    job = desk.job({"real.txt": b"hello\n"})
    results = desk.results(job)
    view = desk.platform.settings.resolved_views_root
    (results / "to_data").symlink_to(view)
    (results / "scan.dcm").symlink_to("/data/lung-v1/manifest.csv")
    (results / "harmless").symlink_to("real.txt")
    os.link(results / "real.txt", results / "hard.txt")
    request = desk.request(desk.collect(job))
    assert request["state"] == "refused"
    for name in ("to_data", "scan.dcm", "harmless"):
        assert refused_by(request, name) == {"links"}, name
    assert refused_by(request, "hard.txt") == {"links"}
    assert refused_by(request, "real.txt") == {"links"}  # both names of the hard link


def test_path_traversal_names_are_refused(desk: Desk) -> None:
    traversal = _zip({"../../etc/cron.d/evil": b"* * * * * root sh\n"})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("/etc/passwd")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"root"))
    files = {"escape.zip": traversal, "escape.tar.gz": buffer.getvalue(),
             "..\\..\\windows.txt": b"hello\n"}  # fmt: skip
    request = desk.request(desk.collect(desk.job(files)))
    assert refused_by(request, "escape.zip") == {"archive"}
    assert refused_by(request, "escape.tar.gz") == {"archive"}
    assert refused_by(request, "..\\..\\windows.txt") == {"name"}
    reasons = " ".join(c["reason"] for f in request["files"] for c in f["checks"])
    assert "path traversal" in reasons


def test_zip_bombs_and_links_inside_archives_are_refused(desk: Desk) -> None:
    bomb = _zip({"zeros.bin": bytes(50 * 1024 * 1024)})
    assert len(bomb) < 100_000
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("data")
        info.type = tarfile.SYMTYPE
        info.linkname = "/data/lung-v1"
        archive.addfile(info)
    request = desk.request(
        desk.collect(desk.job({"bomb.zip": bomb, "links.tar": buffer.getvalue()}))
    )
    assert refused_by(request, "bomb.zip") == {"archive"}
    assert refused_by(request, "links.tar") == {"archive"}
    reasons = " ".join(c["reason"] for f in request["files"] for c in f["checks"])
    assert "zip bomb" in reasons
    assert "is a link" in reasons


def test_honest_results_pass_and_go_to_review(desk: Desk) -> None:
    request = desk.request(desk.collect(desk.job(HONEST)))
    assert verdicts(request) == dict.fromkeys(HONEST, "pass")
    assert request["state"] == "in_review"  # real data: one reviewer
    assert request["policy"] == "one_reviewer"
    types = {f["path"]: f["media_type"] for f in request["files"]}
    assert types == {"metrics.json": "application/json", "roc.png": "image/png",
                     "model.joblib": "application/x-python-pickle"}  # fmt: skip
    assert not desk.results(request["job"]).exists()  # only the request's copies remain


def test_on_synthetic_data_honest_results_leave_at_once(desk: Desk) -> None:
    request = desk.request(desk.collect(desk.job(HONEST, ("sample",))))
    assert request["state"] == "approved"
    assert request["policy"] == "automatic"


def test_flags_send_automatic_releases_to_a_reviewer(desk: Desk) -> None:
    rng = np.random.default_rng(2)
    files = {**HONEST, "notes.md": b"# notes\n", "weights.bin": rng.bytes(2 * 1024 * 1024)}
    request = desk.request(desk.collect(desk.job(files, ("sample",))))
    assert request["state"] == "in_review"
    assert verdicts(request)["notes.md"] == "flag"  # not among the tool's outputs
    flagged = next(f for f in request["files"] if f["path"] == "weights.bin")
    assert {c["check"] for c in flagged["checks"] if c["verdict"] == "flag"} == {
        "declared-output", "large-binary"}  # fmt: skip


def test_a_colour_picture_at_slice_size_is_flagged(desk: Desk) -> None:
    grey = _windowed(desk.pixels())
    colour = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    request = desk.request(desk.collect(desk.job({"roc.png": _png(colour)}, ("sample",))))
    assert verdicts(request) == {"roc.png": "flag"}
    assert request["state"] == "in_review"


def test_a_checker_that_dies_refuses_everything(make_desk: DeskFactory) -> None:
    desk = make_desk(release_checker_memory_mb=64)  # too little to even import numpy
    request = desk.request(desk.collect(desk.job(HONEST, ("sample",))))
    assert request["state"] == "refused"
    assert set(verdicts(request).values()) == {"refuse"}
    assert "the checks stopped" in request["reason"]


def test_a_deployment_adds_its_own_check(make_desk: DeskFactory) -> None:
    desk = make_desk(release_extra_checks="tests.releases.plugin:NoSecrets")
    request = desk.request(desk.collect(desk.job({"metrics.json": b'{"password": "x"}'})))
    assert refused_by(request, "metrics.json") == {"no-secrets"}


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../b", "c:\\x", "ok\nname"])
def test_member_names_that_climb_out_are_refused(name: str) -> None:
    from insitu.releases.archives import ArchiveRefusedError, check_member_name

    with pytest.raises(ArchiveRefusedError):
        check_member_name(name)
    check_member_name("figures/roc.png")


def test_releases_store_is_private(desk: Desk) -> None:
    request = desk.request(desk.collect(desk.job(HONEST)))
    folder = desk.platform.settings.resolved_releases_root / str(request["id"])
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o400}
    assert {p.name for p in folder.iterdir()} == {f["sha256"] for f in request["files"]}


def test_a_dicom_file_appended_or_in_a_second_gzip_stream_is_refused(desk: Desk) -> None:
    import gzip

    scan = desk.instance()
    two_streams = gzip.compress(b"harmless,csv\n1,2\n") + gzip.compress(scan)
    files = {"plot.png": _plot() + scan, "table.csv.gz": two_streams}
    request = desk.request(desk.collect(desk.job(files)))
    assert "dicom" in refused_by(request, "plot.png")
    assert refused_by(request, "table.csv.gz") == {"archive"}


def test_nifti_nrrd_and_hdf5_arrays_of_slices_are_refused(desk: Desk, tmp_path: Path) -> None:
    import gzip

    import h5py
    import nibabel
    import nrrd

    pixels = desk.pixels()
    volume = np.stack([pixels, pixels], axis=-1)  # x, y, slices, as converters write NIfTI
    nifti = nibabel.Nifti1Image(volume.T.copy().T, np.eye(4)).to_bytes()
    nrrd_path = tmp_path / "slice.nrrd"
    nrrd.write(str(nrrd_path), pixels.astype(np.float32) - 1024.0)  # modality values
    hdf5_path = tmp_path / "data.h5"
    with h5py.File(hdf5_path, "w") as handle:
        handle.create_dataset("group/images", data=volume.transpose(2, 0, 1))
        handle.create_dataset("labels", data=np.arange(10))
    mask = (pixels > np.median(pixels)).astype(np.uint8)  # a segmentation: two values
    files = {
        "volume.nii": nifti,
        "volume.nii.gz": gzip.compress(nifti),
        "slice.nrrd": nrrd_path.read_bytes(),
        "data.h5": hdf5_path.read_bytes(),
        "mask.nii.gz": gzip.compress(nibabel.Nifti1Image(mask, np.eye(4)).to_bytes()),
    }
    request = desk.request(desk.collect(desk.job(files)))
    types = {f["path"]: f["media_type"] for f in request["files"]}
    assert types["volume.nii"] == "image/x-nifti"
    assert types["slice.nrrd"] == "image/x-nrrd"
    assert types["data.h5"] == "application/x-hdf5"
    for name in ("volume.nii", "slice.nrrd", "data.h5"):
        assert refused_by(request, name) == {"pixel-arrays"}, name
    assert refused_by(request, "volume.nii.gz") == {"archive"}
    assert refused_by(request, "mask.nii.gz") == set()


def test_too_many_files_and_overlong_paths_are_refused(make_desk: DeskFactory) -> None:
    desk = make_desk(release_max_files=6)
    deep = "/".join(["d" * 250] * 4) + "/metrics.json"  # over 1,000 characters
    request = desk.request(desk.collect(desk.job({deep: b"{}"})))
    (long_name,) = [f["path"] for f in request["files"]]
    assert len(long_name) <= 1000
    assert refused_by(request, long_name) == {"name"}
    many = desk.request(desk.collect(desk.job({f"part{i}.txt": b"x" for i in range(8)})))
    assert many["state"] == "refused"
    assert "pack them into one zip or tar archive" in many["reason"]
    assert len(many["files"]) == 7  # six files, then the refusal that stands for the rest
