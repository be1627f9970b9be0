"""Re-scrub what is stored: instances de-identified by an older engine (which kept what the
table did not name) are de-identified again; catalogue fields are purged, released datasets
get new versions, old blobs go, and a second run finds nothing to do."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from insitu.catalog.models import Instance, Series
from insitu.catalog.service import SelectionCriteria
from insitu.cli.main import app
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Dataset, DatasetState
from insitu.db import session_scope
from insitu.ingest.models import QuarantinedInstance
from insitu.ingest.pseudonyms import Pseudonymizer
from insitu.ingest.rescrub import rescrub
from insitu.ledger.models import LedgerEntry
from tests.datasets.conftest import META, World
from tests.datasets.conftest import world as world  # noqa: PLC0414 - the fixture, shared
from tests.ingest.ocr_corpus import clear_text_case

HOSPITAL_UID = "1.2.826.0.1.3680043.2.1143.4242.77"
LEAKS = ("JOHNDOE", "pacs.st-mary.example", "PATIENT=JOHN", "4242.77")


def _legacy(data: bytes) -> bytes:
    """What the engine before deny-by-default stored: the table applied, the rest kept."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.BodyPartExamined = "JOHNDOE"
    ds.RetrieveURL = "https://pacs.st-mary.example/wado?PATIENT=JOHN"
    ds.MultiFrameSourceSOPInstanceUID = HOSPITAL_UID
    ds.ScanOptions = "JOHNDOE"
    ds.DeidentificationMethod = "insitu DICOM PS3.15 E.1-1 basic"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _make_legacy(platform: Platform, series_count: int = 1) -> list[str]:
    """Turn the first series' instances into legacy ones; their SOP Instance UIDs."""
    with session_scope(platform.sessions) as session:
        series = session.scalars(select(Series).order_by(Series.id).limit(series_count)).all()
        uids = []
        for one in series:
            one.body_part_examined = "JOHNDOE"
            for instance in one.instances:
                old = instance.blob_digest
                data = _legacy(platform.store.get(old))
                instance.blob_digest = platform.store.put(data)
                instance.size = len(data)
                instance.deid_options = instance.deid_options.split(" ", 1)[0]  # old record
                platform.store.delete(old)
                uids.append(instance.sop_instance_uid)
    return uids


def _scan(root: Path) -> set[str]:
    found = set()
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found |= {leak for leak in LEAKS if leak.encode() in data}
    return found


def _released(world: World) -> None:
    publication = world.platform.publication
    with session_scope(world.platform.sessions) as session:
        everything = datasets.create_dataset(
            session, "all", META, world.steward, criteria=SelectionCriteria()
        )
        datasets.release(session, everything, world.steward, publication)
        datasets.publish(session, everything, world.steward, publication)
        datasets.create_dataset(
            session, "draft", META, world.steward, criteria=SelectionCriteria(modality="MR")
        )


def test_rescrub_rewrites_purges_versions_and_is_idempotent(world: World) -> None:
    platform = world.platform
    legacy = _make_legacy(platform)
    _released(world)
    home = platform.settings.home
    assert _scan(home) == set(LEAKS)
    with session_scope(platform.sessions) as session:
        before = {i.sop_instance_uid: i.blob_digest for i in session.scalars(select(Instance))}

    dry = rescrub(platform, dry_run=True)
    assert dry.rewritten == len(legacy)
    assert dry.checked == len(before)
    assert dry.up_to_date == len(before) - len(legacy)
    with session_scope(platform.sessions) as session:
        assert {i.sop_instance_uid: i.blob_digest for i in session.scalars(select(Instance))} == (
            before
        )
    assert _scan(home) == set(LEAKS)  # a dry run stores nothing

    report = rescrub(platform)
    assert report.rewritten == len(legacy)
    assert report.failed == []
    assert report.old_blobs_deleted == len(legacy)
    assert report.invalidated == ["all v1"]
    assert report.new_versions == ["all v2"]
    assert _scan(home) == set()  # not in the blobs, the catalogue, the views or the ledger
    with session_scope(platform.sessions) as session:
        after = {i.sop_instance_uid: i for i in session.scalars(select(Instance))}
        assert set(after) == set(before)  # same instances, same (already pseudonymous) UIDs
        for uid in legacy:
            instance = after[uid]
            assert instance.blob_digest != before[uid]
            assert "allow-list:" in instance.deid_options
            ds = pydicom.dcmread(io.BytesIO(platform.store.get(instance.blob_digest)))
            assert "RetrieveURL" not in ds
            assert "ScanOptions" not in ds
            assert "BodyPartExamined" not in ds
            # Outside the table, the hospital's UID is remapped as a fresh ingest would.
            assert ds.MultiFrameSourceSOPInstanceUID == Pseudonymizer(
                platform.settings.secret_bytes()
            ).uid(HOSPITAL_UID)
            assert ds.SOPInstanceUID == uid
            assert instance.series.body_part_examined is None  # purged from the catalogue
        old = session.scalar(select(Dataset).where(Dataset.name == "all", Dataset.version == 1))
        new = session.scalar(select(Dataset).where(Dataset.name == "all", Dataset.version == 2))
        draft = session.scalar(select(Dataset).where(Dataset.name == "draft"))
        assert old is not None
        assert new is not None
        assert draft is not None
        assert old.state == DatasetState.invalidated
        assert old.invalidated_reason == "re-de-identified"
        assert new.state == DatasetState.draft
        assert new.previous_id == old.id
        assert draft.state == DatasetState.draft  # drafts are released later: nothing to do
        assert datasets.is_steward(session, new, world.steward)
        events = session.scalars(select(LedgerEntry.event_type)).all()
        assert "ingest.rescrubbed" in events
    again = rescrub(platform)
    assert again.rewritten == 0
    assert again.up_to_date == len(before)


def test_rescrub_moves_newly_found_burned_in_text_to_the_quarantine(world: World) -> None:
    platform = world.platform
    platform.settings.ocr = "off"  # the instance is ingested as an old engine would have
    from insitu.ingest import service as ingest
    from insitu.ingest.deid.table import Options
    from insitu.ingest.sources import SourceItem

    buffer = io.BytesIO()
    clear_text_case("US").save_as(buffer, enforce_file_format=True)
    result = ingest.ingest(
        platform,
        [SourceItem("us.dcm", data=buffer.getvalue())],
        site="SITE-A",
        options=Options.parse(""),
    )
    assert result.report["counts"]["ingested"] == 1
    with session_scope(platform.sessions) as session:
        us = session.scalars(select(Instance).where(Instance.sop_class_uid.like("%.6.1"))).one()
        us.deid_options = us.deid_options.split(" ", 1)[0]
        uid = us.sop_instance_uid
    platform.settings.ocr = "tesseract"
    report = rescrub(platform)
    assert report.moved_to_quarantine == 1
    with session_scope(platform.sessions) as session:
        assert session.scalar(select(Instance).where(Instance.sop_instance_uid == uid)) is None
        held = session.scalar(
            select(QuarantinedInstance).where(QuarantinedInstance.sop_instance_uid == uid)
        )
        assert held is not None
        assert held.reason_code == "ocr-text"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rescrub_command_dry_run_json_and_help(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = world.platform
    legacy = _make_legacy(platform)
    home = platform.settings.home
    (home / "settings.env").write_text(
        f"INSITU_SECRET_KEY={platform.settings.secret_key.get_secret_value()}\n"
    )
    monkeypatch.setenv("INSITU_HOME", str(home))
    monkeypatch.setenv("INSITU_DATABASE_URL", platform.settings.database_url)
    runner = CliRunner()
    dry = runner.invoke(app, ["ingest", "rescrub", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert f'"rewritten": {len(legacy)}' in dry.stdout
    assert '"dry_run": true' in dry.stdout
    assert _scan(platform.settings.home) == set(LEAKS)
    done = runner.invoke(app, ["ingest", "rescrub"])
    assert done.exit_code == 0, done.output
    assert f"{len(legacy)} were de-identified again" in done.output
    assert _scan(platform.settings.home) == set()
    assert "rescrub" in runner.invoke(app, ["ingest", "--help"]).stdout
