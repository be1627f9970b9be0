"""Deny by default: planted identifiers of every class are gone from every byte of INSITU_HOME.

The corpus (tests/ingest/adversarial.py) plants values in attributes outside Table E.1-1, in
unknown tags, in wrong VRs, in code sequences, in allow-listed free text, in JPEG segments and
in the small cases of the issue; each test ingests through the real service and scans the
whole deployment folder (database, blobs, temp files) byte by byte.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames

from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest import service
from insitu.ingest.deid.allowlist import AllowListError, load_allow_list
from insitu.ingest.deid.table import Options
from insitu.ingest.models import IngestError
from insitu.ingest.processor import InstanceProcessor, WorkerConfig
from insitu.ingest.sources import iter_sources
from insitu.storage.local import LocalBlobStore
from tests.factories import encode, minimal_dataset, write
from tests.ingest import adversarial

SECRET = b"d" * 48
DEFAULT = Options.parse("retain-long-modified-dates")


def _scan(home: Path, markers: set[bytes]) -> list[str]:
    """Every (file, marker) where a marker is found in the bytes of INSITU_HOME."""
    found = []
    for folder, _dirs, files in os.walk(home):
        for name in files:
            path = Path(folder) / name
            data = path.read_bytes()
            found += [f"{path.relative_to(home)}: {m!r}" for m in markers if m in data]
    return found


def _ingest(
    platform: Platform, paths: list[Path], options: Options = DEFAULT
) -> service.IngestResult:
    return service.ingest(platform, iter_sources(paths), site="SITE-Q", options=options)


def _one(
    data: bytes, options: str = "retain-long-modified-dates", tmp: Path | None = None
) -> pydicom.Dataset:
    store = LocalBlobStore((tmp or Path("/nonexistent")) / "blobs")
    outcome = InstanceProcessor(WorkerConfig(SECRET, Options.parse(options), "S", store)).process(
        "x.dcm", data
    )
    assert outcome.error is None, outcome.error
    assert outcome.staged is not None
    return pydicom.dcmread(store._tmp / outcome.staged.token)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param("", id="basic-profile"),
        pytest.param("retain-long-modified-dates", id="default"),
        pytest.param("retain-safe-private,retain-long-full-dates,clean-descriptors", id="options"),
    ],
)
def test_no_planted_value_survives_anywhere_in_insitu_home(
    sqlite_platform: Platform, tmp_path: Path, options: str
) -> None:
    planted = adversarial.corpus(tmp_path / "export")
    result = _ingest(sqlite_platform, [tmp_path / "export"], Options.parse(options))
    assert result.report["counts"]["failed"] == 0, result.failures
    assert result.report["counts"]["ingested"] + result.report["counts"]["quarantined"] == len(
        planted.files
    )
    markers = planted.markers | {adversarial.PATIENT_ID.encode()}
    assert _scan(sqlite_platform.settings.home, markers) == []
    # Removed attributes are counted by attribute and tag in the QA report.
    removed = result.report["actions"]
    assert removed["SecondaryCaptureDeviceManufacturer (0018,1016)"]["X"] >= 1
    assert any(label.startswith("(0072,999") for label in removed)


def test_unlisted_attributes_removed_top_level_and_nested(tmp_path: Path) -> None:
    result = _one(adversarial.unlisted_file(), tmp=tmp_path)
    walked = result.RealWorldValueMappingSequence[0]
    for container in (result, walked):
        for tag, _kw in adversarial.outside_table("CS"):
            assert tag not in container
        for tag, _kw in adversarial.outside_table("UR"):
            assert tag not in container
    assert "ReferencedSeriesSequence" not in result
    # UIDs outside the table are remapped (2.25 from the keyed pseudonym), never dropped
    # into the hospital root; registered DICOM UIDs stay.
    uid_tag = next(adversarial.outside_table("UI"))[0]
    assert str(result[uid_tag].value).startswith("2.25.")
    assert result.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_wrong_vrs_are_read_by_the_dictionary(tmp_path: Path) -> None:
    result = _one(adversarial.wrong_vr_file(), tmp=tmp_path)
    for tag in (0x00729996, 0x00181016, 0x00180015, 0x00181018, 0x00080070, 0x00729998):
        assert tag not in result, f"{tag:08X} kept"
    shared = result[0x52009229]
    assert shared.VR == "SQ"  # the UN was read as the sequence it is, then walked
    item = shared.value[0]
    assert "QZ2" not in str(item.get("PatientName", ""))
    assert 0x00081040 not in item


def test_code_sequences_keep_only_known_codes_with_vocabulary_meanings(tmp_path: Path) -> None:
    result = _one(adversarial.code_sequence_file(), tmp=tmp_path)
    # D on Institution Code Sequence: one empty item instead of the hospital's code.
    assert [len(i) for i in result.get("InstitutionCodeSequence", [])] in ([], [0])
    region = result.AnatomicRegionSequence
    assert [(i.CodeValue, i.CodingSchemeDesignator) for i in region] == [("51185008", "SCT")]
    assert "QZ4" not in region[0].CodeMeaning
    assert region[0].CodeMeaning  # from the vocabulary
    # D on Content Sequence: one empty item, the original items never walked.
    assert [len(i) for i in result.get("ContentSequence", [])] in ([], [0])


def test_allow_listed_free_text_needs_its_rule(tmp_path: Path) -> None:
    result = _one(adversarial.free_text_file(), tmp=tmp_path)
    for keyword in (
        "ManufacturerModelName",
        "SoftwareVersions",
        "SequenceName",
        "ConvolutionKernel",
        "WindowCenterWidthExplanation",
        "ReceiveCoilName",
        "Manufacturer",
    ):
        assert keyword not in result, keyword
    assert "LUTExplanation" not in result.VOILUTSequence[0]
    ok = minimal_dataset(
        PatientID="P",
        Manufacturer="SIEMENS",
        ManufacturerModelName="SOMATOM Definition AS+",
        SoftwareVersions="syngo CT VA48A",
        SequenceName="*tfl3d1_16ns",
        ConvolutionKernel="B30f",
        WindowCenterWidthExplanation="LUNG",
    )
    kept = _one(encode(ok), tmp=tmp_path / "ok")
    assert kept.ManufacturerModelName == "SOMATOM Definition AS+"
    assert kept.SoftwareVersions == "syngo CT VA48A"
    assert kept.SequenceName == "*tfl3d1_16ns"
    assert kept.WindowCenterWidthExplanation == "LUNG"


def test_clean_descriptors_tokenises_unicode_and_drops_digit_runs(tmp_path: Path) -> None:
    data = adversarial.descriptor_file()
    result = _one(data, "clean-descriptors", tmp=tmp_path)
    stored = result.SeriesDescription, result.StudyDescription, result.ProtocolName
    for value in stored:
        assert value in ("", "ANONYMIZED", None), value
    text = str(result.get("ImageComments", ""))
    assert "5550134" not in text
    clean = _one(
        encode(minimal_dataset(PatientID="P", SeriesDescription="AX T1 POST 3MM")),
        "clean-descriptors",
        tmp_path / "c",
    )
    assert clean.SeriesDescription == "AX T1 POST 3MM"


@pytest.mark.parametrize("fast_path", [True, False], ids=["pixel-data-last", "full-read"])
def test_jpeg_text_segments_stripped_and_pixels_identical(tmp_path: Path, fast_path: bool) -> None:
    data, originals = adversarial.jpeg_file(frames=2)
    if not fast_path:  # an element after Pixel Data sends the file down the full path
        data += b"\xfc\xff\xfc\xff" + b"OB\x00\x00" + (2).to_bytes(4, "little") + b"\x00\x00"
    result = _one(data, tmp=tmp_path)
    raw = result.PixelData
    for marker in (b"QZ7", b"Exif", b"Photoshop", b"ICC_PROFILE", b"\xff\xfe"):
        assert marker not in raw
    frames = list(generate_frames(raw, number_of_frames=2))
    assert len(frames) == 2
    for before, after in zip(originals, frames, strict=True):
        assert Image.open(io.BytesIO(before)).tobytes() == Image.open(io.BytesIO(after)).tobytes()
        assert after.startswith(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    # The new Basic Offset Table points at each frame.
    assert int.from_bytes(raw[4:8], "little") == 8


def test_projection_and_angiography_without_burned_in_attribute_are_quarantined(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    for modality, data in adversarial.burned_in_files():
        write(tmp_path / "export" / f"{modality}.dcm", data)
    result = _ingest(sqlite_platform, [tmp_path / "export"])
    assert result.report["counts"]["quarantined"] == 4
    assert result.report["counts"]["ingested"] == 0


def test_small_leaks(tmp_path: Path) -> None:
    result = _one(
        adversarial.small_leaks_file(), "retain-long-modified-dates,retain-safe-private", tmp_path
    )
    assert "QZ11" not in str(result.get("TimezoneOffsetFromUTC", ""))
    assert 0x0019100C not in result  # creator matched exactly, not case-insensitively
    assert 0x0021100C not in result  # safe element whose value is not a number
    free_charset = minimal_dataset(PatientID="P")
    free_charset.add_new(0x00080005, "CS", "QZ11CHARSET")
    assert "SpecificCharacterSet" not in _one(encode(free_charset), tmp=tmp_path / "cs")


def test_reingest_with_the_other_uid_choice_is_a_conflict(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    write(tmp_path / "export" / "a.dcm", encode(minimal_dataset(PatientID="P-UID")))
    first = _ingest(sqlite_platform, [tmp_path / "export"], Options.parse("retain-uids"))
    assert first.report["counts"]["ingested"] == 1
    second = _ingest(sqlite_platform, [tmp_path / "export"], DEFAULT)
    assert second.report["counts"]["ingested"] == 0
    assert second.report["counts"]["failed"] == 1
    assert "other UID choice" in second.failures[0]["reason"]


def test_links_and_pipes_get_a_line_each_and_duplicates_leave_no_temp_file(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    data = encode(minimal_dataset(PatientID="P-DUP"))
    write(export / "a.dcm", data)
    write(export / "b.dcm", data)  # the same instance twice in one group
    (export / "link.dcm").symlink_to(export / "a.dcm")
    os.mkfifo(export / "pipe.dcm")
    result = _ingest(sqlite_platform, [export])
    reasons = {Path(f["path"]).name: f["reason"] for f in result.failures}
    assert "symbolic link" in reasons["link.dcm"]
    assert "named pipe" in reasons["pipe.dcm"]
    assert result.report["counts"]["duplicates"] == 1
    leftovers = list((sqlite_platform.settings.home / "blobs" / "tmp").glob("*"))
    assert leftovers == []
    with session_scope(sqlite_platform.sessions) as session:
        assert session.query(IngestError).count() == 2


def test_large_zip_members_are_refused_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from insitu.ingest import sources

    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 1000)
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("big.dcm", b"\x00" * 5000)
    items = list(sources.iter_sources([archive]))
    assert items[0].error is not None
    assert "extract the archive" in items[0].error


def test_allow_list_extension_is_merged_and_recorded(tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text(
        '[attributes]\nContrastBolusVolume = { rule = "number", why = "contrast volume" }\n'
        'NumericValue = { rule = "number", why = "SR numbers" }\n'
    )
    allow = load_allow_list(extra)
    assert allow.fingerprint != load_allow_list(None).fingerprint
    store = LocalBlobStore(tmp_path / "blobs")
    ds = minimal_dataset(PatientID="P")
    ds.add_new(0x0040A30A, "DS", "1.5")
    processor = InstanceProcessor(WorkerConfig(SECRET, DEFAULT, "S", store, allow_list=allow))
    outcome = processor.process("e.dcm", encode(ds))
    assert outcome.staged is not None
    result = pydicom.dcmread(store._tmp / outcome.staged.token)
    assert result[0x0040A30A].value == 1.5
    assert allow.fingerprint in result.DeidentificationMethod


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[attributes]\nNotAKeyword = { rule = "number", why = "x" }\n', "not a DICOM keyword"),
        ('[attributes]\nRows = { rule = "terms", why = "x" }\n', "cannot use rule terms"),
        ('[attributes]\nRows = { rule = "number" }\n', "needs a why"),
        ('[attributes]\nRows = { rule = "maybe", why = "x" }\n', "unknown rule"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_allow_list_extensions_name_the_file_and_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    extra = tmp_path / "bad.toml"
    extra.write_text(text)
    with pytest.raises(AllowListError, match=message) as caught:
        load_allow_list(extra)
    assert str(extra) in str(caught.value)


def test_clinical_import_is_deny_by_default(sqlite_platform: Platform, tmp_path: Path) -> None:
    from insitu.ingest.clinical import ClinicalMapping, ClinicalMappingError
    from insitu.ingest.corpus import CLINICAL_MAPPING_TOML

    mapping_path = tmp_path / "map.toml"
    mapping_path.write_text(CLINICAL_MAPPING_TOML)
    mapping = ClinicalMapping.load(mapping_path)
    write(tmp_path / "export" / "a.dcm", encode(minimal_dataset(PatientID="QZCLIN-1")))
    clinical = tmp_path / "clinical.csv"
    clinical.write_text(
        "patient_id,name,phone,sex,age,diagnosis,diagnosis_date,stage\n"
        "QZCLIN-1,QZNAME Smith,5550134,F,61,adenocarcinoma,2020-01-02,II\n"
        "QZCLIN-2,QZNAME Jones,5550135,M,50,QZFREE seen by Dr Who,2020-01-02,II\n"
    )
    result = service.ingest(
        sqlite_platform,
        iter_sources([tmp_path / "export"]),
        site="SITE-Q",
        options=DEFAULT,
        clinical=(clinical, mapping),
    )
    assert result.report["counts"]["clinical_rows"] == 1
    reasons = [f["reason"] for f in result.failures]
    assert "row 2: column 'diagnosis' is not one of the column's allowed values" in reasons
    markers = {b"QZCLIN", b"QZNAME", b"QZFREE", b"5550134", b"2020-01-02"}
    assert _scan(sqlite_platform.settings.home, markers) == []
    free_text = tmp_path / "free.toml"
    free_text.write_text('key = "patient_id"\n[columns]\ndiagnosis = "diagnosis"\n')
    with pytest.raises(ClinicalMappingError, match="keeps free text"):
        ClinicalMapping.load(free_text)


def test_head_volumes_are_flagged_for_the_steward(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    from insitu.ingest.corpus import generate_corpus

    generate_corpus(tmp_path / "export", subjects=1, ct_slices=3, mr_slices=20, rows=8, columns=8)
    result = _ingest(sqlite_platform, [tmp_path / "export"])
    flagged = result.report["face_risk_series"]
    assert len(flagged) == 1  # the 20-slice brain MR, not the 3-slice chest CT
    assert flagged[0]["instances"] == 20
    assert "does not deface" in flagged[0]["reason"]


def test_jpeg_2000_comments_stripped_in_main_and_tile_part_headers() -> None:
    import struct

    import numpy as np
    from openjpeg.utils import decode, encode

    from insitu.ingest.deid.pixels import strip_encapsulated

    pixels = (np.arange(4096).reshape(64, 64) % 251).astype("uint8")
    stream = bytes(encode(pixels, codec_format=0))
    comment = b"\xff\x64" + struct.pack(">HH", 2 + 2 + 10, 1) + b"QZ7J2KNAME"
    siz_end = 4 + struct.unpack(">H", stream[4:6])[0]
    stream = stream[:siz_end] + comment + stream[siz_end:]
    sot = stream.index(b"\xff\x90")
    psot = struct.unpack(">L", stream[sot + 6 : sot + 10])[0]
    tile = bytearray(stream[sot : sot + 12])
    struct.pack_into(">L", tile, 6, psot + len(comment))
    stream = stream[:sot] + bytes(tile) + comment + stream[sot + 12 :]
    assert (decode(stream) == pixels).all()
    encapsulated = encapsulate_frames([stream])
    stripped = strip_encapsulated(encapsulated, "1.2.840.10008.1.2.4.90", 1)
    assert stripped is not None
    frame = next(generate_frames(stripped[:-8], number_of_frames=1))
    assert b"QZ7" not in frame
    assert (decode(frame) == pixels).all()
    # Nothing to strip: the value is left as it was.
    assert strip_encapsulated(stripped, "1.2.840.10008.1.2.4.90", 1) is None


def encapsulate_frames(frames: list[bytes]) -> bytes:
    from pydicom.encaps import encapsulate

    return encapsulate(frames, has_bot=True) + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
