"""Datasets on a real database: creation from the catalogue, lifecycle, and who may use them."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.models import ProjectRole
from insitu.catalog import service as catalog
from insitu.catalog.models import Series
from insitu.catalog.service import SelectionCriteria
from insitu.datasets import service as datasets
from insitu.datasets.models import Dataset, DatasetState
from insitu.db import session_scope, utcnow
from insitu.ledger import service as ledger
from insitu.ledger.models import LedgerEntry
from tests.datasets.conftest import META, World


def _create(
    world: World,
    name: str = "lung-ct",
    criteria: SelectionCriteria | None = None,
    series_uids: list[str] | None = None,
) -> int:
    if criteria is None and series_uids is None:
        criteria = SelectionCriteria(modality="CT")
    with session_scope(world.platform.sessions) as session:
        return datasets.create_dataset(
            session, name, META, world.steward, criteria=criteria, series_uids=series_uids
        ).id


def _get(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    assert dataset is not None
    return dataset


def test_create_from_a_query_or_a_list_records_references_and_provenance(world: World) -> None:
    dataset_id = _create(world)
    with session_scope(world.platform.sessions) as session:
        dataset = _get(session, dataset_id)
        assert dataset.state == DatasetState.draft
        assert len(datasets.series_of(session, dataset)) == 3  # one CT series per subject
        assert dataset.provenance["sites"] == ["SITE-A"]
        assert dataset.provenance["instances"] == 6
        assert dataset.selection == {"kind": "catalogue query", "modality": "CT"}
        uids = list(session.scalars(select(Series.series_instance_uid).limit(2)))
    listed = _create(world, "two-series", series_uids=uids)
    with session_scope(world.platform.sessions) as session:
        assert len(datasets.series_of(session, _get(session, listed))) == 2
        with pytest.raises(datasets.DatasetError, match="not in the catalogue"):
            datasets.create_dataset(session, "bad", META, world.steward, series_uids=["1.2.3.4.5"])
        with pytest.raises(datasets.DatasetError, match="exists"):
            datasets.create_dataset(
                session, "lung-ct", META, world.steward, criteria=SelectionCriteria()
            )


def test_clinical_criteria_select_subjects(world: World) -> None:
    with session_scope(world.platform.sessions) as session:
        older = datasets.create_dataset(
            session, "older", META, world.steward, criteria=SelectionCriteria(age_min=56)
        )
        assert older.provenance["instances"] == 6  # two of three subjects, 3 instances each
        with pytest.raises(datasets.DatasetError, match="empty"):
            datasets.create_dataset(
                session,
                "none",
                META,
                world.steward,
                criteria=SelectionCriteria(diagnosis="melanoma"),
            )


def test_lifecycle_and_its_illegal_moves(world: World) -> None:
    dataset_id = _create(world)
    with session_scope(world.platform.sessions) as session:
        dataset = _get(session, dataset_id)
        with pytest.raises(datasets.DatasetError, match="only a released version"):
            datasets.publish(session, dataset, world.steward, world.platform.publication)
        with pytest.raises(datasets.DatasetError, match="stewards"):
            datasets.release(session, dataset, world.researcher, world.platform.publication)
        content = datasets.release(session, dataset, world.steward, world.platform.publication)
        assert content == datasets.content_hash(session, dataset)
        with pytest.raises(datasets.DatasetError, match="new version"):
            datasets.update_metadata(session, dataset, META, world.steward)
        datasets.publish(session, dataset, world.steward, world.platform.publication)
        assert dataset.state == DatasetState.published
        with pytest.raises(datasets.DatasetError, match="reason"):
            datasets.invalidate(session, dataset, "  ", world.steward)
        following = datasets.new_version(session, dataset, world.steward)
        assert (following.version, following.previous_id) == (2, dataset.id)
        assert following.state == DatasetState.draft
        assert datasets.series_of(session, following) == datasets.series_of(session, dataset)
        datasets.invalidate(session, dataset, "withdrawal", world.steward)
        assert dataset.invalidated_reason == "withdrawal"
        kinds = [
            e.event_type
            for e in session.scalars(select(LedgerEntry).order_by(LedgerEntry.index))
            if e.event_type.startswith("dataset.")
        ]
    assert kinds == [
        "dataset.created",
        "dataset.released",
        "dataset.published",
        "dataset.created",
        "dataset.invalidated",
    ]


def test_can_use_dataset_is_the_one_decision(world: World) -> None:
    dataset_id = _create(world)
    platform = world.platform
    with session_scope(platform.sessions) as session:
        dataset = _get(session, dataset_id)
        decision = datasets.can_use_dataset(session, world.researcher, dataset)
        assert (decision.allowed, decision.reason) == (
            False,
            "the dataset is a draft: it must be released first",
        )
        datasets.release(session, dataset, world.steward, world.platform.publication)
        assert "no grant" in datasets.can_use_dataset(session, world.researcher, dataset).reason
        until = utcnow() + dt.timedelta(days=1)
        row = datasets.grant(session, dataset, world.steward, user_id=world.researcher, until=until)
        assert "terms" in datasets.can_use_dataset(session, world.researcher, dataset).reason
        datasets.accept_terms(session, dataset, world.researcher)
        assert datasets.can_use_dataset(session, world.researcher, dataset).allowed
        later = until + dt.timedelta(seconds=1)
        expired = datasets.can_use_dataset(session, world.researcher, dataset, now=later)
        assert expired.reason == "your grant has expired"
        datasets.revoke(session, dataset, row.id, world.steward)
        assert not datasets.can_use_dataset(session, world.researcher, dataset).allowed
        # Through a project instead.
        project = access.create_project(session, "team", "", ledger.HOST_ACTOR)
        outsider = access.get_user_by_id(session, world.outsider)
        assert outsider is not None
        access.add_member(session, project, outsider, ProjectRole.member, ledger.HOST_ACTOR)
        datasets.grant(session, dataset, world.steward, project_id=project.id)
        datasets.accept_terms(session, dataset, world.outsider)
        assert datasets.can_use_dataset(session, world.outsider, dataset).allowed
        datasets.mark_corrupted(session, dataset, "blob changed")
        assert "integrity" in datasets.can_use_dataset(session, world.outsider, dataset).reason
        datasets.invalidate(session, dataset, "superseded", world.steward)
        assert (
            "invalidated: superseded"
            in datasets.can_use_dataset(session, world.outsider, dataset).reason
        )


def test_only_stewards_grant_and_a_grant_names_one_grantee(world: World) -> None:
    dataset_id = _create(world)
    with session_scope(world.platform.sessions) as session:
        dataset = _get(session, dataset_id)
        with pytest.raises(datasets.DatasetError, match="stewards"):
            datasets.grant(session, dataset, world.researcher, user_id=world.researcher)
        with pytest.raises(datasets.DatasetError, match="user or to a project"):
            datasets.grant(session, dataset, world.steward)
        datasets.add_steward(session, dataset, world.outsider, world.steward)
        datasets.grant(session, dataset, world.outsider, user_id=world.researcher)


def test_verify_catches_a_blob_changed_behind_insitus_back(world: World) -> None:
    dataset_id = _create(world)
    platform = world.platform
    with session_scope(platform.sessions) as session:
        dataset = _get(session, dataset_id)
        with pytest.raises(datasets.DatasetError, match="never released"):
            datasets.verify_dataset(session, platform.store, dataset)
        datasets.release(session, dataset, world.steward, world.platform.publication)
        assert datasets.verify_dataset(session, platform.store, dataset).ok
        uid, digest = next(
            catalog.instances_of_series(session, datasets.series_of(session, dataset))
        )
    # Someone edits a stored instance directly on disk.
    path = platform.store.root / "sha256" / digest[:2] / digest  # type: ignore[attr-defined]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with session_scope(platform.sessions) as session:
        dataset = _get(session, dataset_id)
        result = datasets.verify_dataset(session, platform.store, dataset)
        assert result.problems == [f"instance {uid}: blob {digest} was changed on disk"]
    with session_scope(platform.sessions) as session:
        dataset = _get(session, dataset_id)
        assert dataset.corrupted
        kinds = [e.event_type for e in session.scalars(select(LedgerEntry))]
        assert "dataset.corrupted" in kinds


def test_statistics_break_down_by_clinical_data(world: World) -> None:
    dataset_id = _create(world)
    with session_scope(world.platform.sessions) as session:
        dataset = _get(session, dataset_id)
        stats = datasets.statistics(session, dataset, world.steward)
        assert stats["by_diagnosis"] == {"adenocarcinoma": 3}
        assert stats["by_age_band"] == {"50-59": 3}
        assert stats["by_sex"] == {"F": 1, "M": 2}
        hidden = datasets.statistics(session, dataset, world.researcher)
        assert hidden["by_sex"] == {"F": "<5", "M": "<5"}
