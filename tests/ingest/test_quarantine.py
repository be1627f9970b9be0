"""The quarantine at volume: reasons (with the OCR's), review by series and reason, bulk
release and delete with ledger entries, retention, the steward's page and its refusals."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from sqlalchemy import select, update

from insitu.access import service as access
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest import service
from insitu.ingest.deid.table import Options
from insitu.ingest.models import QuarantinedInstance
from insitu.ingest.sources import SourceItem
from insitu.ledger import service as ledger
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.factories import encode, minimal_dataset, user_token
from tests.ingest.ocr_corpus import clean_case, clear_text_case

PASSWORD = "a long enough secret"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _series(count: int, **attributes: object) -> list[bytes]:
    series_uid = generate_uid()
    study_uid = generate_uid()
    files = []
    for _ in range(count):
        ds = minimal_dataset(SeriesInstanceUID=series_uid, StudyInstanceUID=study_uid)
        for keyword, value in attributes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        files.append(encode(ds, pixels=bytes(64)))
    return files


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _ingest(platform: Platform, files: list[bytes]) -> service.IngestResult:
    items = (SourceItem(source=f"file{i}.dcm", data=data) for i, data in enumerate(files))
    return service.ingest(platform, items, site="SITE", options=Options.parse("none"))


@pytest.fixture
def held(platform: Platform) -> dict[str, list[bytes]]:
    """Three kinds of reason: no Burned In Annotation (US), YES (SC), and the OCR's."""
    groups = {
        "burned-in-absent": _series(
            3, Modality="US", SOPClassUID=US_IMAGE, BurnedInAnnotation=None
        ),
        "burned-in-yes": _series(
            2, Modality="OT", SOPClassUID=SECONDARY_CAPTURE, BurnedInAnnotation="YES"
        ),
        "ocr-text": [_part10(clear_text_case("US")), _part10(clear_text_case("XA", "ID 4471932"))],
        "clean": [_part10(clean_case("US"))],
    }
    result = _ingest(platform, [f for files in groups.values() for f in files])
    assert result.report["counts"]["quarantined"] == 7, result.report["quarantined"]
    assert result.report["counts"]["ingested"] == 1  # the clean US: header NO, OCR found nothing
    return groups


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def _bearer(platform: Platform, name: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token(platform, name, role)}"}


def test_reasons_are_coded_and_counted_never_the_text(
    platform: Platform, held: dict[str, list[bytes]]
) -> None:
    with session_scope(platform.sessions) as session:
        rows = session.scalars(select(QuarantinedInstance)).all()
        by_code: dict[str, list[QuarantinedInstance]] = {}
        for row in rows:
            by_code.setdefault(row.reason_code, []).append(row)
    assert {code: len(v) for code, v in by_code.items()} == {
        "burned-in-absent": 3,
        "burned-in-yes": 2,
        "ocr-text": 2,
    }
    for row in by_code["ocr-text"]:
        assert re.fullmatch(
            r"OCR found \d+ word\(s\) of text in 1 of 1 sampled frame\(s\), though Burned In "
            r"Annotation is NO",
            row.reason,
        )
        # What the OCR read is never stored: not the name, not the ID, not the date.
        for word in ("DOE", "JANE", "1961", "4471932"):
            assert word not in row.reason


def test_steward_reviews_in_bulk_by_series_and_by_reason(
    platform: Platform, client: TestClient, held: dict[str, list[bytes]]
) -> None:
    steward = _bearer(platform, "stew", "steward")
    summary = client.get("/api/v1/quarantine/summary", headers=steward).json()
    assert summary["total"] == 7
    assert {r["reason_code"]: r["count"] for r in summary["reasons"]} == {
        "burned-in-absent": 3,
        "burned-in-yes": 2,
        "ocr-text": 2,
    }
    absent = [s for s in summary["series"] if s["reason_code"] == "burned-in-absent"]
    assert len(absent) == 1
    assert absent[0]["count"] == 3
    listed = client.get(
        "/api/v1/quarantine", params={"reason_code": "burned-in-yes"}, headers=steward
    ).json()["items"]
    assert len(listed) == 2
    assert {i["reason_code"] for i in listed} == {"burned-in-yes"}

    released = client.post(
        "/api/v1/quarantine/decisions",
        json={"decision": "release", "series_instance_uid": absent[0]["series_instance_uid"]},
        headers=steward,
    )
    assert released.status_code == 200, released.text
    assert released.json() == {
        "decision": "release",
        "count": 3,
        "reasons": {"burned-in-absent": 3},
    }
    catalogued = client.get("/api/v1/catalog/series?modality=US", headers=steward).json()
    released_series = [
        s
        for s in catalogued["items"]
        if s["series_instance_uid"] == absent[0]["series_instance_uid"]
    ]
    assert released_series
    assert released_series[0]["instances"] == 3

    doomed = list(listed)
    deleted = client.post(
        "/api/v1/quarantine/decisions",
        json={"decision": "delete", "reason_code": "burned-in-yes"},
        headers=steward,
    ).json()
    assert deleted == {"decision": "delete", "count": 2, "reasons": {"burned-in-yes": 2}}
    with session_scope(platform.sessions) as session:
        left = session.scalars(select(QuarantinedInstance.reason_code)).all()
        entries = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.event_type.like("ingest.quarantine.%"))
            .order_by(LedgerEntry.index)
        ).all()
    assert sorted(left) == ["ocr-text", "ocr-text"]
    assert [e.event_type for e in entries] == [
        "ingest.quarantine.released",
        "ingest.quarantine.deleted",
    ]
    for entry in entries:
        assert entry.actor.startswith("user:")
        # Counts and a hash only: no UID, no subject in the public ledger.
        for item in doomed:
            assert item["sop_instance_uid"] not in entry.payload
            assert item["subject"] not in entry.payload
    assert '"count":3' in entries[0].payload
    stored = set(platform.store.digests())
    with session_scope(platform.sessions) as session:
        referenced = set(session.scalars(select(QuarantinedInstance.blob_digest)))
    assert referenced <= stored
    assert len(stored) == 1 + 3 + 2  # the clean US, the released series, the OCR ones


def test_bad_decisions_are_explained_and_change_nothing(
    platform: Platform, client: TestClient, held: dict[str, list[bytes]]
) -> None:
    steward = _bearer(platform, "stew", "steward")
    cases = {
        "say which instances": {"decision": "delete"},
        "unknown reason code": {"decision": "delete", "reason_code": "everything"},
        "no quarantined instance matches": {"decision": "release", "series_instance_uid": "1.2.3"},
    }
    for message, body in cases.items():
        answer = client.post("/api/v1/quarantine/decisions", json=body, headers=steward)
        assert answer.status_code == 422, answer.text
        assert message in answer.json()["detail"]
    bad = client.post(
        "/api/v1/quarantine/decisions", json={"decision": "approve", "reason_code": "ocr-text"},
        headers=steward,
    )  # fmt: skip
    assert bad.status_code == 422
    too_long = client.post(
        "/api/v1/quarantine/decisions",
        json={"decision": "delete", "sop_instance_uids": ["1." * 40]},
        headers=steward,
    )
    assert too_long.status_code == 422
    assert client.get("/quarantine/1.2.3/preview.jpg", headers=steward).status_code == 404
    assert client.get("/api/v1/quarantine/summary", headers=steward).json()["total"] == 7


def test_wrong_role_deactivated_steward_and_no_login_change_nothing(
    platform: Platform, client: TestClient, held: dict[str, list[bytes]]
) -> None:
    body = {"decision": "delete", "reason_code": "ocr-text"}
    for role in ("researcher", "auditor", "admin", "organiser", "maintainer"):
        answer = client.post(
            "/api/v1/quarantine/decisions", json=body, headers=_bearer(platform, role, role)
        )
        assert answer.status_code == 403, role
    gone = _bearer(platform, "former", "steward")
    with session_scope(platform.sessions) as session:
        user = access.get_user(session, "former")
        assert user is not None
        access.deactivate_user(session, user, ledger.HOST_ACTOR)
    assert client.post("/api/v1/quarantine/decisions", json=body, headers=gone).status_code == 401
    assert client.post("/api/v1/quarantine/decisions", json=body).status_code == 401
    summary = client.get(
        "/api/v1/quarantine/summary", headers=_bearer(platform, "steward2", "steward")
    )
    assert summary.json()["total"] == 7


def test_retention_deletes_undecided_instances_past_the_limit(
    platform: Platform, held: dict[str, list[bytes]]
) -> None:
    with session_scope(platform.sessions) as session:
        session.execute(
            update(QuarantinedInstance)
            .where(QuarantinedInstance.reason_code == "burned-in-yes")
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
        )
    platform.settings.quarantine_retention_days = 0
    assert service.expire_quarantine(platform).count == 0  # 0: kept until decided
    platform.settings.quarantine_retention_days = 30
    before = set(platform.store.digests())
    outcome = service.expire_quarantine(platform)
    assert outcome.as_dict() == {"decision": "expire", "count": 2, "reasons": {"burned-in-yes": 2}}
    assert len(before - set(platform.store.digests())) == 2
    with session_scope(platform.sessions) as session:
        assert session.scalar(
            select(LedgerEntry.payload).where(LedgerEntry.event_type == "ingest.quarantine.expired")
        )
        assert len(session.scalars(select(QuarantinedInstance)).all()) == 5
    # The next ingest applies the same rule: nothing else is old enough.
    _ingest(platform, [])
    with session_scope(platform.sessions) as session:
        assert len(session.scalars(select(QuarantinedInstance)).all()) == 5


def _sign_in(platform: Platform, client: TestClient, name: str, role: str) -> None:
    with session_scope(platform.sessions) as session:
        user = access.create_user(session, name, role)
        access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
    client.cookies.clear()
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = client.post(
        "/login", data={"name": name, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert answer.status_code == 200, answer.text


def test_quarantine_page_previews_and_decides(
    platform: Platform, client: TestClient, held: dict[str, list[bytes]]
) -> None:
    assert (
        client.get("/quarantine", follow_redirects=False).headers["location"].startswith("/login")
    )
    _sign_in(platform, client, "rita", "researcher")
    refused = client.get("/quarantine")
    assert refused.status_code == 403
    assert "for data stewards" in refused.text
    _sign_in(platform, client, "stew", "steward")
    page = client.get("/quarantine")
    assert page.status_code == 200
    assert "ocr-text" in page.text
    assert "burned-in-yes" in page.text
    preview = re.search(r'src="(/quarantine/[0-9.]+/preview\.jpg)"', page.text)
    assert preview is not None
    picture = client.get(preview.group(1))
    assert picture.headers["content-type"] == "image/jpeg"
    assert picture.content[:2] == b"\xff\xd8"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    no_csrf = client.post("/quarantine/decide", data={"decision": "delete",
                                                      "reason_code": "ocr-text"})  # fmt: skip
    assert no_csrf.status_code == 403
    done = client.post(
        "/quarantine/decide",
        data={"decision": "delete", "reason_code": "ocr-text", "csrf_token": csrf.group(1)},
        follow_redirects=True,
    )
    assert "2 instance(s) deleted; recorded in the ledger" in done.text
    assert "<code>ocr-text</code>" not in done.text


def test_ocr_reads_only_risky_instances_and_can_be_turned_off(platform: Platform) -> None:
    def ct_with_text(seed: int) -> bytes:
        ds = clear_text_case("US", seed=seed)
        ds.Modality = "CT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
        return _part10(ds)

    on = _ingest(platform, [_part10(clear_text_case("US", seed=8)), ct_with_text(10)])
    # CT is never read by the OCR (no cost, no false alarm); the US is.
    assert [i["reason_code"] for i in on.report["quarantined"]] == ["ocr-text"]
    assert on.report["counts"]["ingested"] == 1
    platform.settings.ocr = "off"
    off = _ingest(platform, [_part10(clear_text_case("US", seed=9)), ct_with_text(11)])
    # Off: the header's NO is trusted.
    assert off.report["counts"]["ingested"] == 2
    assert off.report["counts"]["quarantined"] == 0
