"""Subject withdrawal: new versions without the subject, old ones invalidated ("withdrawal"),
the subject gone from the catalogue, blobs deleted, all on the ledger."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.models import Series, Subject
from insitu.catalog.service import SelectionCriteria, instances_of_series, subject_series
from insitu.datasets import service as datasets
from insitu.datasets import withdrawal
from insitu.datasets.models import DatasetState
from insitu.datasets.view import ensure_view
from insitu.db import session_scope
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.datasets.conftest import META, World
from tests.factories import user_token


def _pseudonyms(world: World) -> list[str]:
    with session_scope(world.platform.sessions) as session:
        return sorted(session.scalars(select(Subject.pseudonym)))


def _setup(world: World) -> None:
    """'all' v1 published, granted, terms accepted, with a view; 'ct' v1 and v2 released;
    'draft' a draft; 'one' holds only the withdrawn subject."""
    platform = world.platform
    publication = platform.publication
    withdrawn = _pseudonyms(world)[0]
    with session_scope(platform.sessions) as session:
        everything = datasets.create_dataset(
            session, "all", META, world.steward, criteria=SelectionCriteria()
        )
        datasets.release(session, everything, world.steward, publication)
        datasets.publish(session, everything, world.steward, publication)
        datasets.grant(session, everything, world.steward, user_id=world.researcher)
        datasets.accept_terms(session, everything, world.researcher)
        ensure_view(session, platform.store, platform.settings.resolved_views_root, everything)
        ct = datasets.create_dataset(
            session, "ct", META, world.steward, criteria=SelectionCriteria(modality="CT")
        )
        datasets.release(session, ct, world.steward, publication)
        ct2 = datasets.new_version(session, ct, world.steward)
        datasets.release(session, ct2, world.steward, publication)
        datasets.create_dataset(
            session, "draft", META, world.steward, criteria=SelectionCriteria(modality="MR")
        )
        series = subject_series(session, withdrawn)
        assert series is not None
        one = datasets.create_dataset(
            session,
            "one",
            META,
            world.steward,
            series_uids=[
                uid for uid, series_id in _uids(session).items() if series_id in set(series)
            ],
        )
        datasets.release(session, one, world.steward, publication)


def _uids(session: Session) -> dict[str, int]:
    rows = session.execute(select(Series.series_instance_uid, Series.id)).all()
    return {str(uid): int(i) for uid, i in rows}


def test_withdrawal_versions_invalidates_and_deletes_blobs(world: World) -> None:
    _setup(world)
    platform = world.platform
    withdrawn, *kept = _pseudonyms(world)
    with session_scope(platform.sessions) as session:
        before = datasets.get_dataset(session, "all", 1)
        assert before is not None
        old_hash = before.content_hash
        rows = list(
            session.execute(
                select(LedgerEntry.index).order_by(LedgerEntry.index.desc()).limit(1)
            ).scalars()
        )
        first_new_entry = rows[0] + 1
        series = subject_series(session, withdrawn)
        assert series is not None
        gone = {digest for _, digest in instances_of_series(session, series)}
        all_series = [s for ids in [subject_series(session, p) for p in kept] for s in ids or []]
        staying = {digest for _, digest in instances_of_series(session, all_series)}
    view_v1 = platform.settings.resolved_views_root / "all-v1"
    assert view_v1.is_dir()
    assert all(platform.store.exists(d) for d in gone)

    with session_scope(platform.sessions) as session:
        result = withdrawal.withdraw_subject(
            session, withdrawn, world.steward, platform.publication
        )
    assert sorted(result.new_versions) == [("all", 2), ("ct", 3), ("ct", 4)]
    assert sorted(result.invalidated) == [("all", 1), ("ct", 1), ("ct", 2), ("one", 1)]
    assert result.emptied == [("one", 1)]
    assert result.drafts == [("draft", 1)]
    assert result.instances == 3
    assert set(result.digests) == gone
    with session_scope(platform.sessions) as session:
        deleted = withdrawal.collect_blobs(
            session, platform.store, platform.settings.resolved_views_root, result
        )
    assert deleted == 3
    assert not any(platform.store.exists(d) for d in gone)
    assert all(platform.store.exists(d) for d in staying)
    assert not view_v1.exists()

    with session_scope(platform.sessions) as session:
        assert subject_series(session, withdrawn) is None  # gone from the catalogue
        v1 = datasets.get_dataset(session, "all", 1)
        v2 = datasets.get_dataset(session, "all", 2)
        assert v1 is not None
        assert v2 is not None
        assert (v1.state, v1.invalidated_reason) == (DatasetState.invalidated, "withdrawal")
        assert v2.state == DatasetState.published
        assert v2.previous_id == v1.id
        assert v2.pid == "all.v2"
        assert v2.pid_registered
        assert v2.content_hash != old_hash
        assert datasets.statistics(session, v2, world.steward)["subjects"] == 2
        # The researcher keeps working, on the new version.
        assert datasets.can_use_dataset(session, world.researcher, v2).allowed
        assert not datasets.can_use_dataset(session, world.researcher, v1).allowed
        ct3 = datasets.get_dataset(session, "ct", 3)
        ct4 = datasets.get_dataset(session, "ct", 4)
        assert ct3 is not None
        assert ct4 is not None
        assert (ct3.state, ct4.state) == (DatasetState.released, DatasetState.released)
        assert datasets.statistics(session, ct4, world.steward)["instances"] == 4
        draft = datasets.get_dataset(session, "draft")
        assert draft is not None
        assert draft.state == DatasetState.draft
        assert len(datasets.series_of(session, draft)) == 2
        entries = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.index >= first_new_entry)
            .order_by(LedgerEntry.index)
        ).all()
        types = [e.event_type for e in entries]
        # One per version that held the subject: all v1, ct v1, ct v2, draft, one.
        assert types.count("dataset.subject_withdrawn") == 5
        assert types.count("dataset.granted") == 1  # carried over to all v2
        assert types.count("dataset.terms_accepted") == 1
        assert "catalog.subject_withdrawn" in types
        assert types[-1] == "storage.blobs_deleted"
        assert types.count("dataset.invalidated") == 4
        # The public ledger names the subject only by a digest.
        assert all(withdrawn not in e.payload + e.subject for e in entries)


def test_only_stewards_of_every_dataset_holding_the_subject_may_withdraw(world: World) -> None:
    _setup(world)
    platform = world.platform
    withdrawn = _pseudonyms(world)[0]
    with session_scope(platform.sessions) as session:
        other = access.create_user(session, "sven", Role.steward)
        other_id = other.id
    with session_scope(platform.sessions) as session:
        with pytest.raises(datasets.NotStewardError, match="all v1"):
            withdrawal.withdraw_subject(session, withdrawn, other_id, platform.publication)
        with pytest.raises(datasets.DatasetError, match="no subject 'nobody'"):
            withdrawal.withdraw_subject(session, "nobody", world.steward, platform.publication)
    with session_scope(platform.sessions) as session:
        assert subject_series(session, withdrawn)  # nothing changed


def test_the_withdrawal_route(world: World) -> None:
    _setup(world)
    platform = world.platform
    withdrawn = _pseudonyms(world)[0]
    stranger = {"Authorization": f"Bearer {user_token(platform, 'sven', 'steward')}"}
    researcher = {"Authorization": f"Bearer {user_token(platform, 'rita', 'researcher')}"}
    steward_token = user_token(platform, "stew2", "steward")
    with session_scope(platform.sessions) as session:
        stew2 = access.get_user(session, "stew2")
        assert stew2 is not None
        for name, version in (("all", 1), ("ct", 1), ("ct", 2), ("draft", 1), ("one", 1)):
            dataset = datasets.get_dataset(session, name, version)
            assert dataset is not None
            datasets.add_steward(session, dataset, stew2.id, world.steward)
    body = {"subject": withdrawn}
    with TestClient(create_app(platform)) as client:
        assert client.post("/api/v1/withdrawals", json=body).status_code == 401
        assert client.post("/api/v1/withdrawals", json=body, headers=researcher).status_code == 403
        refused = client.post("/api/v1/withdrawals", json=body, headers=stranger)
        assert refused.status_code == 403
        assert "do not steward" in refused.json()["detail"]
        answer = client.post(
            "/api/v1/withdrawals",
            json=body,
            headers={"Authorization": f"Bearer {steward_token}"},
        )
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["blobs_deleted"] == 3
        assert sorted(report["new_versions"]) == ["all v2", "ct v3", "ct v4"]
        again = client.post(
            "/api/v1/withdrawals", json=body, headers={"Authorization": f"Bearer {steward_token}"}
        )
        assert again.status_code == 422
