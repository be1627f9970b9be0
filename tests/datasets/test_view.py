"""The view of a released dataset version on disk: layout, documents, no way to the store."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.catalog.service import SelectionCriteria
from insitu.datasets import service as datasets
from insitu.datasets.view import ensure_view, view_name
from insitu.db import session_scope
from insitu.storage.local import LocalBlobStore
from insitu.storage.views import ViewError
from insitu.web.app import create_app
from tests.datasets.conftest import META, World
from tests.factories import user_token


def _released(world: World, name: str = "chest") -> None:
    with session_scope(world.platform.sessions) as session:
        dataset = datasets.create_dataset(
            session, name, META, world.steward, criteria=SelectionCriteria()
        )
        with pytest.raises(ViewError, match="only released versions have a view"):
            ensure_view(
                session,
                world.platform.store,
                world.platform.settings.resolved_views_root,
                dataset,
            )
        datasets.release(session, dataset, world.steward, world.platform.publication)


def test_view_layout_documents_and_zero_copy(world: World) -> None:
    _released(world)
    platform = world.platform
    root = platform.settings.resolved_views_root
    with session_scope(platform.sessions) as session:
        dataset = datasets.get_dataset(session, "chest")
        assert dataset is not None
        view = ensure_view(session, platform.store, root, dataset)
        content_hash = dataset.content_hash
        assert view_name(dataset) == "chest-v1"
    assert view == root / "chest-v1"
    documents = ["README.txt", "clinical.csv", "index.json", "manifest.csv"]
    assert sorted(p.name for p in view.iterdir() if p.is_file()) == documents
    subjects = sorted(p.name for p in view.iterdir() if p.is_dir())
    assert len(subjects) == 3
    manifest = list(csv.DictReader(io.StringIO((view / "manifest.csv").read_text())))
    assert len(manifest) == 9  # 3 subjects x (2 CT + 1 MR)
    index = json.loads((view / "index.json").read_text())
    assert index["content_sha256"] == content_hash
    assert [r["path"] for r in index["instances"]] == [r["path"] for r in manifest]
    store = platform.store
    assert isinstance(store, LocalBlobStore)
    dicom_files = sorted(str(p.relative_to(view)) for p in view.rglob("*.dcm"))
    assert dicom_files == sorted(r["path"] for r in manifest)
    for row in manifest:
        path = view / row["path"]
        subject, study, series, instance = row["path"].split("/")
        assert (subject, study, series, instance) == (
            row["subject"],
            row["study_instance_uid"],
            row["series_instance_uid"],
            row["sop_instance_uid"] + ".dcm",
        )
        assert path.stat().st_ino == store.path_of(row["sha256"]).stat().st_ino  # no copy
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert header.SOPInstanceUID == row["sop_instance_uid"]
        assert header.PatientID == row["subject"]
    assert {r["modality"] for r in manifest} == {"CT", "MR"}
    clinical = list(csv.DictReader(io.StringIO((view / "clinical.csv").read_text())))
    assert sorted(r["subject"] for r in clinical) == subjects
    assert {"age", "diagnosis", "sex"} <= set(clinical[0])
    readme = (view / "README.txt").read_text()
    assert "/data/chest-v1" in readme
    assert content_hash is not None
    assert content_hash in readme
    # No way from the view to the blob store: only regular files and folders, and no
    # document names the store.
    for folder, dirs, files in os.walk(view):
        for name in dirs + files:
            assert not (Path(folder) / name).is_symlink()
    everything = "".join((view / d).read_text() for d in documents)
    assert str(store.root) not in everything
    assert "sha256/" not in everything


def test_invalidating_removes_the_view(world: World) -> None:
    _released(world)
    platform = world.platform
    root = platform.settings.resolved_views_root
    with session_scope(platform.sessions) as session:
        dataset = datasets.get_dataset(session, "chest")
        assert dataset is not None
        view = ensure_view(session, platform.store, root, dataset)
        sample = ensure_view(session, platform.store, root, dataset, sample=1)
    assert view.is_dir()
    assert sample.name == "chest-v1-sample1"
    assert len({p.name for p in sample.iterdir() if p.is_dir()}) == 1
    token = user_token(platform, "stella-api", "steward")
    with session_scope(platform.sessions) as session:
        dataset = datasets.get_dataset(session, "chest")
        assert dataset is not None
        api_user = access.get_user(session, "stella-api")
        assert api_user is not None
        datasets.add_steward(session, dataset, api_user.id, world.steward)
    with TestClient(create_app(platform)) as client:
        answer = client.post(
            "/api/v1/datasets/chest/invalidate",
            json={"reason": "wrong labels"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200, answer.text
    assert not view.exists()
    assert not sample.exists()
    with session_scope(platform.sessions) as session:
        dataset = datasets.get_dataset(session, "chest")
        assert dataset is not None
        with pytest.raises(ViewError, match="invalidated"):
            ensure_view(session, platform.store, root, dataset)


def test_a_corrupted_version_gets_no_view(world: World) -> None:
    _released(world)
    platform = world.platform
    with session_scope(platform.sessions) as session:
        dataset = datasets.get_dataset(session, "chest")
        assert dataset is not None
        datasets.mark_corrupted(session, dataset, "blob changed")
        with pytest.raises(ViewError, match="corrupted"):
            ensure_view(session, platform.store, platform.settings.resolved_views_root, dataset)
