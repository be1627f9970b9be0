"""No route or page hands a user DICOM or raw pixel bytes: every GET route of the app is
called, as each role and as a user with a grant, with real identifiers filled in, and no
answer holds a stored instance, its DICOM header, or its pixel data."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.access import service as access
from insitu.access.models import Role
from insitu.access.permissions import iter_api_routes
from insitu.catalog.models import Instance, Series, Study
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import open_platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Tier
from insitu.db import session_scope
from insitu.web.app import create_app
from tests.conftest import make_settings
from tests.datasets.conftest import ingest_clinical_corpus


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_route_returns_dicom_or_pixels(tmp_path: Path, database_url: str) -> None:
    (tmp_path / "home").mkdir()
    platform = open_platform(make_settings(tmp_path / "home", database_url=database_url))
    ingest_clinical_corpus(platform, tmp_path, subjects=2, ct_slices=1)
    tokens = {}
    with session_scope(platform.sessions) as session:
        users = {role: access.create_user(session, f"user-{role.value}", role) for role in Role}
        steward = users[Role.steward]
        dataset = datasets.create_dataset(
            session, "lung", datasets.DatasetMetadata(title="Lung", tier=Tier.synthetic),
            steward.id, criteria=SelectionCriteria(),
        )  # fmt: skip
        datasets.release(session, dataset, steward.id, platform.publication)
        datasets.publish(session, dataset, steward.id, platform.publication)
        for user in users.values():
            datasets.grant(session, dataset, steward.id, user_id=user.id)
            datasets.accept_terms(session, dataset, user.id)
            tokens[user.name] = access.issue_token(session, user)
        study, series, sop, digest = session.execute(
            select(Study.study_instance_uid, Series.series_instance_uid,
                   Instance.sop_instance_uid, Instance.blob_digest)
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
        ).first()  # type: ignore[misc]  # fmt: skip
        digests = session.scalars(select(Instance.blob_digest)).all()
    blobs = [platform.store.get(d) for d in digests]
    pixels = [pydicom.dcmread(io.BytesIO(b)).PixelData for b in blobs]
    values = {
        "{study}": study, "{series}": series, "{instance}": sop, "{frames}": "1",
        "{name}": "lung", "{version}": "1", "{identifier:path}": "lung.v1",
        "{path:path}": digest, "{digest}": digest,
    }  # fmt: skip
    app = create_app(platform)
    called = 0
    images = 0  # renders that did answer: the checks below saw real pictures
    with TestClient(app) as client:
        for path, route in iter_api_routes(app.routes):
            if "GET" not in (route.methods or ()):
                continue
            url = path
            for key, value in values.items():
                url = url.replace(key, value)
            url = re.sub(r"\{[^}]+\}", "1", url)
            for token in [None, *tokens.values()]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                answer = client.get(url, headers=headers)
                called += 1
                images += answer.headers.get("content-type") == "image/jpeg"
                body = answer.content
                assert "dicom" not in answer.headers.get("content-type", "").replace(
                    "dicom+json", ""
                ), url
                assert body[128:132] != b"DICM", url
                assert not any(blob in body for blob in blobs), url
                assert not any(data in body for data in pixels), url
    assert called > 100
    assert images >= 4 * len(Role)  # rendered, frame, two thumbnails, for every role
    platform.close()
