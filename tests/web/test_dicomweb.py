"""DICOMweb under /dicomweb, driven by the dicomweb-client package as a real client: QIDO-RS
over the datasets the caller may use, WADO-RS rendered frames and thumbnails under the
budget, and a 403 with the reason for every retrieval of DICOM, frames, metadata or bulk
data."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform, open_platform
from insitu.datasets import service as datasets
from insitu.db import session_scope
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.conftest import make_settings
from tests.datasets.conftest import ingest_clinical_corpus
from tests.servers import live_app

# Routes that address catalogue objects by UID: the caller's datasets decide (tested here).
DICOMWEB_ROUTES = {
    ("GET", "/dicomweb/studies/{study}/series"),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances"),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered"),
    ("GET", ("/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
     "/rendered")),
    ("GET", "/dicomweb/studies/{study}/series/{series}/thumbnail"),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/thumbnail"),
    ("GET", "/dicomweb/studies/{study}"),
    ("GET", "/dicomweb/studies/{study}/metadata"),
    ("GET", "/dicomweb/studies/{study}/series/{series}"),
    ("GET", "/dicomweb/studies/{study}/series/{series}/metadata"),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}"),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata"),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"),
    ("GET", "/dicomweb/bulkdata/{path:path}"),
    ("GET", "/api/v1/explore/studies/{study}/series/{series}/instances/{instance}/header"),
}  # fmt: skip
BUDGET = 20  # frames per hour in these tests
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


@dataclass
class Viewer:
    platform: Platform
    tokens: dict[str, str]


@pytest.fixture
def viewer(tmp_path: Path, database_url: str) -> Iterator[Viewer]:
    """Rita may use the MR series only (dataset "brain"); Stan stewards both; Bob has none."""
    (tmp_path / "home").mkdir()
    platform = open_platform(
        make_settings(tmp_path / "home", database_url=database_url, viewer_frames_per_hour=BUDGET)
    )
    ingest_clinical_corpus(platform, tmp_path, subjects=2, ct_slices=2)
    with session_scope(platform.sessions) as session:
        people = (("rita", Role.researcher), ("stan", Role.steward), ("bob", Role.researcher))
        users = {name: access.create_user(session, name, role) for name, role in people}
        brain = datasets.create_dataset(
            session, "brain", datasets.DatasetMetadata(title="Brain MR"), users["stan"].id,
            criteria=SelectionCriteria(modality="MR"),
        )  # fmt: skip
        datasets.release(session, brain, users["stan"].id, platform.publication)
        datasets.grant(session, brain, users["stan"].id, user_id=users["rita"].id)
        datasets.accept_terms(session, brain, users["rita"].id)
        tokens = {name: access.issue_token(session, user) for name, user in users.items()}
    yield Viewer(platform, tokens)
    platform.close()


def _client(url: str, token: str) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=f"{url}/dicomweb", headers={"Authorization": f"Bearer {token}"})


def _values(document: dict[str, Any], tag: str) -> list[Any]:
    return list(document.get(tag, {}).get("Value", []))


def _walk(document: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(document, dict):
        for key, value in document.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(document, list):
        for value in document:
            yield from _walk(value)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_real_dicomweb_client_searches_and_renders(viewer: Viewer) -> None:
    from requests.exceptions import HTTPError

    with live_app(viewer.platform) as url:
        client = _client(url, viewer.tokens["rita"])
        studies = client.search_for_studies()
        assert len(studies) == 2  # two subjects, each with one MR series usable
        assert all(_values(s, "00080061") == ["MR"] for s in studies)
        study = _values(studies[0], "0020000D")[0]
        series = client.search_for_series(study)
        assert [_values(s, "00080060") for s in series] == [["MR"]]
        series_uid = _values(series[0], "0020000E")[0]
        instances = client.search_for_instances(study, series_uid)
        sop = _values(instances[0], "00080018")[0]
        assert _values(instances[0], "00280010") == [16]
        everything = [studies, series, instances]
        keys = {key for key, _ in _walk(everything)}
        assert not keys & {"InlineBinary", "BulkDataURI"}
        assert not {v["vr"] for part in everything for item in part for v in item.values()} & (
            BINARY_VRS
        )
        jpeg = client.retrieve_instance_rendered(
            study, series_uid, sop, media_types=("image/jpeg",), params={"window": "40,400"}
        )
        assert jpeg[:3] == b"\xff\xd8\xff"
        assert Image.open(io.BytesIO(jpeg)).size == (16, 16)
        for retrieve in (
            lambda: client.retrieve_instance(study, series_uid, sop),
            lambda: client.retrieve_series(study, series_uid),
            lambda: client.retrieve_study(study),
            lambda: client.retrieve_series_metadata(study, series_uid),
            lambda: client.retrieve_instance_frames(study, series_uid, sop, frame_numbers=[1]),
        ):
            with pytest.raises(HTTPError) as refused:
                retrieve()
            answer = refused.value.response
            assert answer is not None
            assert answer.status_code == 403
            assert "never hands out DICOM" in answer.json()["detail"]


def _rendered(client: TestClient, token: str, study: str, series: str, instance: str,
              **params: str) -> Any:  # fmt: skip
    return client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )


def _uids(viewer: Viewer, modality: str) -> tuple[str, str, str]:
    from insitu.catalog.models import Instance, Series, Study

    with session_scope(viewer.platform.sessions) as session:
        row = session.execute(
            select(Study.study_instance_uid, Series.series_instance_uid, Instance.sop_instance_uid)
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
            .where(Series.modality == modality)
        ).first()
        assert row is not None
        return row[0], row[1], row[2]


def _viewed(viewer: Viewer) -> int:
    with session_scope(viewer.platform.sessions) as session:
        kind = LedgerEntry.event_type == "dataset.viewed"
        return int(session.scalar(select(func.count()).where(kind)) or 0)


def test_access_budget_and_ledger(viewer: Viewer) -> None:
    mr, ct = _uids(viewer, "MR"), _uids(viewer, "CT")
    with TestClient(create_app(viewer.platform)) as client:
        rita, bob, stan = (viewer.tokens[n] for n in ("rita", "bob", "stan"))
        first = _rendered(client, rita, *mr, preset="brain")
        assert first.status_code == 200
        assert first.headers["content-type"] == "image/jpeg"
        assert first.headers["X-Insitu-Frames-Left"] == str(BUDGET - 1)
        assert _viewed(viewer) == 1  # opening the series is a use of its dataset
        assert _rendered(client, rita, *mr, window="40,1").status_code == 200
        assert _viewed(viewer) == 1  # once per series and hour
        hidden = _rendered(client, rita, *ct)  # CT is in no dataset Rita may use
        assert hidden.status_code == 404
        assert "datasets you may use" in hidden.json()["detail"]
        assert _rendered(client, bob, *mr).status_code == 404
        assert _rendered(client, stan, *mr).status_code == 404  # a steward needs a grant too
        headers = {"Authorization": f"Bearer {bob}"}
        assert client.get("/dicomweb/studies", headers=headers).json() == []
        thumb = client.get(f"/dicomweb/studies/{mr[0]}/series/{mr[1]}/thumbnail",
                           headers={"Authorization": f"Bearer {rita}"})  # fmt: skip
        assert thumb.status_code == 200
        assert _viewed(viewer) == 1  # thumbnails are not openings
        png = _rendered_with(client, rita, mr, accept="image/png")
        assert png.status_code == 406
        bad = _rendered(client, rita, *mr, preset="liver-ish")
        assert bad.status_code == 400
        for _ in range(BUDGET - 3):  # refusals did not count: the whole budget in all
            assert _rendered(client, rita, *mr).status_code == 200
        spent = _rendered(client, rita, *mr)
        assert spent.status_code == 429
        assert "frames for this hour" in spent.json()["detail"]
        assert client.get(f"/dicomweb/studies/{mr[0]}", headers=headers).status_code == 403
        assert client.get(f"/dicomweb/studies/{mr[0]}").status_code == 401


def _rendered_with(client: TestClient, token: str, uids: tuple[str, str, str],
                   accept: str) -> Any:  # fmt: skip
    study, series, instance = uids
    return client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
        headers={"Authorization": f"Bearer {token}", "Accept": accept},
    )


def test_search_filters(viewer: Viewer) -> None:
    with TestClient(create_app(viewer.platform)) as client:
        headers = {"Authorization": f"Bearer {viewer.tokens['rita']}"}
        every = client.get("/dicomweb/studies", headers=headers).json()
        assert len(every) == 2
        patient = every[0]["00100020"]["Value"][0]
        one = client.get("/dicomweb/studies", params={"PatientID": patient}, headers=headers)
        assert [s["00100020"]["Value"] for s in one.json()] == [[patient]]
        none = client.get("/dicomweb/studies", params={"ModalitiesInStudy": "CT"}, headers=headers)
        assert none.json() == []
        assert client.get("/dicomweb/studies", params={"StudyDate": "19000101-19000102"},
                          headers=headers).json() == []  # fmt: skip
        page = client.get("/dicomweb/studies", params={"limit": 1, "offset": 1}, headers=headers)
        assert len(page.json()) == 1
        assert page.headers["content-type"] == "application/dicom+json"
        json.dumps(every)  # plain JSON


def test_the_header_tree_hides_binary_values(viewer: Viewer) -> None:
    study, series, sop = _uids(viewer, "MR")
    url = f"/api/v1/explore/studies/{study}/series/{series}/instances/{sop}/header"
    with TestClient(create_app(viewer.platform)) as client:
        rita = {"Authorization": f"Bearer {viewer.tokens['rita']}"}
        tree = client.get(url, headers=rita).json()
        by_keyword = {e["keyword"]: e for e in tree}
        assert by_keyword["SOPInstanceUID"]["value"] == sop
        pixels = by_keyword["PixelData"]
        assert pixels["length"] == 16 * 16 * 2
        assert set(pixels) == {"tag", "keyword", "vr", "length", "sha256"}  # no value
        assert all("value" not in e for e in tree if e["vr"] in BINARY_VRS)
        sequences = [e for e in tree if e["vr"] == "SQ"]
        assert sequences  # de-identification method codes, at least
        assert all(isinstance(e["items"], list) for e in sequences)
        found = client.get(url, params={"search": "modality"}, headers=rita).json()
        assert {e["keyword"] for e in found} >= {"Modality"}
        assert len(found) < len(tree)
        ct = _uids(viewer, "CT")
        hidden = f"/api/v1/explore/studies/{ct[0]}/series/{ct[1]}/instances/{ct[2]}/header"
        assert client.get(hidden, headers=rita).status_code == 404
        bob = {"Authorization": f"Bearer {viewer.tokens['bob']}"}
        assert client.get(url, headers=bob).status_code == 404
        assert client.get(url).status_code == 401
