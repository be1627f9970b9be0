"""End-to-end ingest through the service: PHI, pseudonyms, idempotence, bad input, crashes."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from insitu.catalog.models import ClinicalRecord, Instance, Series, Subject
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest import service
from insitu.ingest.clinical import ClinicalMapping
from insitu.ingest.corpus import CLINICAL_MAPPING_TOML, Corpus, generate_corpus, write_clinical
from insitu.ingest.deid.table import Options
from insitu.ingest.models import IngestBatch, IngestError, QuarantinedInstance
from insitu.ingest.processor import InstanceProcessor, Outcome, WorkerConfig
from insitu.ingest.pseudonyms import Pseudonymizer
from insitu.ingest.sources import iter_sources
from insitu.storage.local import LocalBlobStore
from insitu.storage.protocol import sha256_hex
from tests.factories import encode, minimal_dataset, write

DEFAULT = Options.parse("retain-long-modified-dates")


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return generate_corpus(
        tmp_path / "export",
        subjects=3,
        ct_slices=3,
        mr_slices=2,
        rows=32,
        columns=32,
        ultrasound=True,
    )


def _mapping(tmp_path: Path) -> ClinicalMapping:
    path = tmp_path / "map.toml"
    path.write_text(CLINICAL_MAPPING_TOML)
    return ClinicalMapping.load(path)


def _count(platform: Platform, model: type) -> int:
    with session_scope(platform.sessions) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _ingest(platform: Platform, paths: list[Path], **kwargs: object) -> service.IngestResult:
    params: dict[str, object] = {"site": "SITE-A", "options": DEFAULT}
    params.update(kwargs)
    return service.ingest(platform, iter_sources(paths), **params)  # type: ignore[arg-type]


def test_ingest_catalogues_quarantines_and_imports_clinical(
    platform: Platform, corpus: Corpus, tmp_path: Path
) -> None:
    clinical = write_clinical(corpus, tmp_path / "clinical.csv")
    result = _ingest(platform, [corpus.root], clinical=(clinical, _mapping(tmp_path)))
    counts = result.report["counts"]
    assert counts["ingested"] == 15
    assert counts["quarantined"] == 3
    assert counts["failed"] == 0
    assert counts["clinical_rows"] == 3
    assert _count(platform, Instance) == 15
    assert _count(platform, QuarantinedInstance) == 3
    assert _count(platform, Subject) == 3
    report = result.report
    assert report["actions"]["PatientName"] == {"P": 18}  # quarantined ones are de-identified too
    assert report["actions"]["Private Attributes"]["X"] >= 15
    assert report["options"] == ["retain-long-modified-dates"]
    pseudo = Pseudonymizer(platform.settings.secret_bytes())
    patient = corpus.patients[0]
    with session_scope(platform.sessions) as session:
        subject = session.scalar(
            select(Subject).where(Subject.pseudonym == pseudo.subject("SITE-A", patient.patient_id))
        )
        assert subject is not None
        record = session.scalar(
            select(ClinicalRecord).where(ClinicalRecord.subject_id == subject.id)
        )
        assert record is not None
        assert set(record.data) == {"sex", "age", "diagnosis", "diagnosis_date", "stage"}
        shift = pseudo.date_shift("SITE-A", patient.patient_id)
        study = patient.study_date
        import datetime as dt

        original = dt.date(int(study[:4]), int(study[4:6]), int(study[6:]))
        assert record.data["diagnosis_date"] == (original + shift).isoformat()


def test_no_phi_survives_anywhere_in_insitu_home(
    sqlite_platform: Platform, corpus: Corpus, tmp_path: Path
) -> None:
    clinical = write_clinical(corpus, tmp_path / "clinical.csv")
    bad = write(corpus.root / f"{corpus.patients[0].name}_notes" / "scan.txt", b"not dicom")
    result = _ingest(
        sqlite_platform, [corpus.root], clinical=(clinical, _mapping(tmp_path)), workers=2
    )
    assert result.report["counts"]["failed"] == 1
    sqlite_platform.engine.dispose()
    phi = set(corpus.phi_strings)
    for patient in corpus.patients:
        d = patient.study_date
        phi |= {
            f"{d[:4]}-{d[4:6]}-{d[6:]}",
            patient.name.replace("^", "_"),
            "Harbour",
            "Leith",
            "HOUSE^GREGORY",
            "TECH^TINA",
            "Royal Infirmary",
            "LEITH_PACS",
        }
    phi.add(bad.parent.name)
    home = sqlite_platform.settings.home
    files = [p for p in home.rglob("*") if p.is_file()]
    assert len(files) > 15
    for path in files:
        content = path.read_bytes()
        for value in phi:
            assert value.encode() not in content, f"{value!r} found in {path.relative_to(home)}"
            assert value.upper().encode() not in content, (
                f"{value!r} found in {path.relative_to(home)}"
            )
            assert value.encode("utf-16-le") not in content


def test_pseudonyms_stable_across_two_ingests_and_sites(platform: Platform, corpus: Corpus) -> None:
    files = sorted(corpus.files)
    first, second = files[::2], files[1::2]
    _ingest(platform, first)
    _ingest(platform, second)
    with session_scope(platform.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Subject)) == 3
        # Each original series (2 per subject + an ultrasound) maps to one catalogued series.
        assert session.scalar(select(func.count()).select_from(Series)) == 6
    pseudo = Pseudonymizer(platform.settings.secret_bytes())
    patient = corpus.patients[1]
    assert pseudo.subject("SITE-A", patient.patient_id) == pseudo.subject(
        "SITE-A", patient.patient_id
    )
    assert pseudo.subject("SITE-A", patient.patient_id) != pseudo.subject(
        "OTHER", patient.patient_id
    )
    # The same Patient ID at another site is another person; at the same site, the same one.
    folder = corpus.root.parent / "later"
    write(folder / "a.dcm", encode(minimal_dataset(PatientID=patient.patient_id)))
    _ingest(platform, [folder], site="OTHER")
    assert _count(platform, Subject) == 4
    write(folder / "b.dcm", encode(minimal_dataset(PatientID=patient.patient_id)))
    _ingest(platform, [folder / "b.dcm"])
    assert _count(platform, Subject) == 4


def test_reingest_is_idempotent_and_other_options_conflict(
    platform: Platform, corpus: Corpus
) -> None:
    _ingest(platform, [corpus.root])
    instances = _count(platform, Instance)
    again = _ingest(platform, [corpus.root])
    assert again.report["counts"]["duplicates"] == 18
    assert again.report["counts"]["ingested"] == 0
    assert _count(platform, Instance) == instances
    conflicting = _ingest(platform, [corpus.root], options=Options.parse("retain-long-full-dates"))
    counts = conflicting.report["counts"]
    assert counts["failed"] == 18
    assert all("conflict" in f["reason"] for f in conflicting.report["failures"])
    assert _count(platform, Instance) == instances


def test_each_kind_of_bad_input_is_reported_and_the_rest_stored(
    platform: Platform, corpus: Corpus, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    good = encode(minimal_dataset(), pixels=bytes(256))
    write(bad / "not-dicom.txt", b"hello, this is not DICOM at all" * 10)
    write(bad / "truncated.dcm", good[:-100])
    no_uid = minimal_dataset()
    del no_uid.StudyInstanceUID
    write(bad / "no-study-uid.dcm", encode(no_uid))
    no_pid = minimal_dataset()
    del no_pid.PatientID
    write(bad / "no-patient-id.dcm", encode(no_pid))
    write(bad / "private-ts.dcm", encode(minimal_dataset(), transfer_syntax="1.2.3.4.5.6"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("../../escape.dcm", good)
        zf.writestr("ok/inside.dcm", encode(minimal_dataset(), pixels=bytes(256)))
        zf.writestr("bomb.bin", b"\0" * (8 * 1024 * 1024))
    write(bad / "upload.zip", archive.getvalue())
    clinical = tmp_path / "clinical.csv"
    clinical.write_text(
        "patient_id,sex,age,diagnosis,diagnosis_date,stage\n"
        f"{corpus.patients[0].patient_id},F,61,benign,2020-01-02,II\n"
        f"{corpus.patients[1].patient_id},M,not-a-number,benign,2020-01-02,II\n"
        ",M,50,benign,2020-01-02,II\n"
        f"{corpus.patients[2].patient_id},M,50,benign,31.02.2020,II\n"
    )
    result = _ingest(platform, [corpus.root, bad], clinical=(clinical, _mapping(tmp_path)))
    counts = result.report["counts"]
    reasons = {Path(f["path"]).name: f["reason"] for f in result.failures}
    assert "not a DICOM file" in reasons["not-dicom.txt"]
    assert "truncated" in reasons["truncated.dcm"]
    assert "StudyInstanceUID is missing" in reasons["no-study-uid.dcm"]
    assert "PatientID is missing" in reasons["no-patient-id.dcm"]
    assert "unsupported transfer syntax" in reasons["private-ts.dcm"]
    assert "1.2.3.4.5.6" not in reasons["private-ts.dcm"]  # file content is never echoed
    assert "path traversal" in reasons["escape.dcm"]
    assert "zip bomb" in reasons["bomb.bin"]
    clinical_reasons = [f["reason"] for f in result.failures if f["kind"] == "clinical"]
    assert "row 2: column 'age' is not a valid int" in clinical_reasons
    assert "row 3: key column 'patient_id' is empty" in clinical_reasons
    assert "row 4: column 'diagnosis_date' is not a valid date" in clinical_reasons
    assert counts["failed"] == 7
    assert counts["clinical_failed"] == 3
    assert counts["clinical_rows"] == 1
    assert counts["ingested"] == 15 + 1  # the corpus and the good zip member
    with session_scope(platform.sessions) as session:
        errors = session.scalars(select(IngestError)).all()
        assert len(errors) == 10
        assert all(len(e.path_hmac) == 32 and "/" not in e.path_hmac for e in errors)
        assert not any("bad" in e.reason or "PID" in e.reason for e in errors)
        batch = session.get(IngestBatch, result.batch_id)
        assert batch is not None
        assert batch.failed == 10
        assert batch.status.value == "completed"


def test_crash_mid_batch_leaves_nothing_half_written_and_rerun_completes(
    platform: Platform, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "GROUP_SIZE", 4)
    original = service._GroupWriter.write
    calls = {"n": 0}

    def crash_on_third(self: service._GroupWriter, outcomes: list[Outcome]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        original(self, outcomes)

    monkeypatch.setattr(service._GroupWriter, "write", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _ingest(platform, [corpus.root])
    _assert_consistent(platform)
    assert 0 < _count(platform, Instance) + _count(platform, QuarantinedInstance) < 18
    monkeypatch.setattr(service._GroupWriter, "write", original)
    result = _ingest(platform, [corpus.root])
    assert result.report["counts"]["failed"] == 0
    assert _count(platform, Instance) + _count(platform, QuarantinedInstance) == 18
    _assert_consistent(platform)


def _assert_consistent(platform: Platform) -> None:
    """Every row's blob exists with the right bytes; every stored blob is whole."""
    store = platform.store
    with session_scope(platform.sessions) as session:
        digests = set(session.scalars(select(Instance.blob_digest))) | set(
            session.scalars(select(QuarantinedInstance.blob_digest))
        )
    for digest in digests:
        assert store.exists(digest)
    for digest in store.digests():
        assert sha256_hex(store.get(digest)) == digest


def test_pydicoms_bundled_files_ingest_without_stopping(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    names = [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "rtplan.dcm",
        "image_dfl.dcm",
        "MR_truncated.dcm",
        "no_meta.dcm",
        "examples_overlay.dcm",
        "SC_rgb_small_odd.dcm",
        "nested_priv_SQ.dcm",
        "rtdose.dcm",
        "liver_1frame.dcm",
    ]
    folder = tmp_path / "pydicom"
    for name in names:
        path = get_testdata_file(name, download=False)
        assert path is not None, name
        write(folder / name, Path(str(path)).read_bytes())
    result = _ingest(sqlite_platform, [folder])
    counts = result.report["counts"]
    assert counts["files"] == len(names)
    failed = {Path(f["path"]).name: f["reason"] for f in result.failures}
    assert set(failed) == {
        "MR_truncated.dcm",
        "image_dfl.dcm",
        "nested_priv_SQ.dcm",
        "MR_small_bigendian.dcm",
        "no_meta.dcm",
    }
    assert "truncated" in failed["MR_truncated.dcm"]
    assert "conflict" in failed["MR_small_bigendian.dcm"]  # same SOP Instance UID as MR_small
    assert counts["quarantined"] == 2  # the secondary capture and the OT overlay example
    assert counts["ingested"] == len(names) - 7
    for digest in sqlite_platform.store.digests():
        ds = pydicom.dcmread(io.BytesIO(sqlite_platform.store.get(digest)))
        assert ds.PatientIdentityRemoved == "YES"


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "JPEG2000.dcm",
        "image_dfl.dcm",
        "liver_1frame.dcm",
    ],
)
def test_transfer_syntaxes_keep_their_encoding_and_pixels(name: str, tmp_path: Path) -> None:
    source = Path(str(get_testdata_file(name, download=False)))
    original = pydicom.dcmread(source, force=True)
    if "PatientID" not in original or not original.PatientID:
        original.PatientID = "PID-SYNTAX"
        data = io.BytesIO()
        original.save_as(data)
        payload = data.getvalue()
    else:
        payload = source.read_bytes()
    store = LocalBlobStore(tmp_path)
    processor = InstanceProcessor(WorkerConfig(b"s" * 40, DEFAULT, "SITE-A", store))
    outcome = processor.process(name, payload)
    assert outcome.error is None, outcome.error
    assert outcome.staged is not None
    result = pydicom.dcmread(store._tmp / outcome.staged.token)
    syntax = getattr(original.file_meta, "TransferSyntaxUID", None) or "1.2.840.10008.1.2"
    assert result.file_meta.TransferSyntaxUID == syntax
    assert (result.pixel_array == original.pixel_array).all()
    assert str(result.PatientID).startswith("S-")


def test_pixel_data_bytes_are_copied_unchanged(sqlite_platform: Platform, tmp_path: Path) -> None:
    pixels = os.urandom(512)
    path = write(tmp_path / "in" / "a.dcm", encode(minimal_dataset(), pixels=pixels))
    _ingest(sqlite_platform, [path])
    (digest,) = list(sqlite_platform.store.digests())
    assert pydicom.dcmread(io.BytesIO(sqlite_platform.store.get(digest))).PixelData == pixels


def test_dataset_without_preamble_or_file_meta_is_read_tolerantly(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    ds = minimal_dataset()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    path = write(tmp_path / "old" / "IM0001", buffer.getvalue())
    result = _ingest(sqlite_platform, [path])
    assert result.report["counts"]["ingested"] == 1, result.failures


@pytest.mark.slow
def test_sigkill_mid_batch_then_rerun(tmp_path: Path) -> None:
    """A real kill -9 of `insitu ingest` between groups, then the same command again."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from insitu.settings import load_settings, write_settings_file

    home = tmp_path / "home"
    write_settings_file(home)
    corpus = generate_corpus(
        tmp_path / "export", subjects=6, ct_slices=100, mr_slices=0, rows=64, columns=64
    )
    env = {**os.environ, "INSITU_HOME": str(home)}
    command = [
        sys.executable,
        "-m",
        "insitu.cli.main",
        "ingest",
        str(corpus.root),
        "--workers",
        "1",
        "--json",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    database = home / "insitu.db"
    killed_at = None
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if database.exists():
            try:
                with sqlite3.connect(database, timeout=1) as connection:
                    count = connection.execute("select count(*) from instances").fetchone()[0]
            except sqlite3.Error:
                count = 0
            if count > 0:
                process.send_signal(signal.SIGKILL)
                killed_at = count
                break
        time.sleep(0.01)
    process.wait()
    if killed_at is None or killed_at >= len(corpus.files):
        pytest.skip("the ingest finished before it could be killed")
    from insitu.core.platform import open_platform

    platform = open_platform(load_settings(home=home))
    try:
        _assert_consistent(platform)
        assert _count(platform, Instance) < len(corpus.files)
    finally:
        platform.close()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-500:]
    platform = open_platform(load_settings(home=home))
    try:
        assert _count(platform, Instance) == len(corpus.files)
        _assert_consistent(platform)
    finally:
        platform.close()
