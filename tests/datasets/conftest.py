"""Shared dataset fixtures: a catalogue of three subjects with clinical data, and users."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from insitu.access import service as access
from insitu.access.models import Role
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Tier
from insitu.db import session_scope
from insitu.ingest import service as ingest
from insitu.ingest.clinical import ClinicalMapping
from insitu.ingest.corpus import CLINICAL_MAPPING_TOML, generate_corpus, write_clinical
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import iter_sources

META = datasets.DatasetMetadata(
    title="Lung CT", authors=("Site A",), license="CC-BY-4.0", tier=Tier.synthetic
)


@dataclass
class World:
    platform: Platform
    steward: int
    researcher: int
    outsider: int


def ingest_clinical_corpus(
    platform: Platform, tmp_path: Path, subjects: int, ct_slices: int
) -> None:
    """Synthetic subjects (CT and one MR slice each) with their clinical records, ingested."""
    corpus = generate_corpus(
        tmp_path / "export",
        subjects=subjects,
        ct_slices=ct_slices,
        mr_slices=1,
        rows=16,
        columns=16,
    )
    mapping = tmp_path / "map.toml"
    mapping.write_text(CLINICAL_MAPPING_TOML)
    ingest.ingest(
        platform,
        iter_sources([corpus.root]),
        site="SITE-A",
        options=Options.parse(""),
        clinical=(write_clinical(corpus, tmp_path / "clinical.csv"), ClinicalMapping.load(mapping)),
    )


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    ingest_clinical_corpus(platform, tmp_path, subjects=3, ct_slices=2)
    with session_scope(platform.sessions) as session:
        ids = [
            access.create_user(session, name, role).id
            for name, role in (
                ("stella", Role.steward),
                ("rex", Role.researcher),
                ("otto", Role.researcher),
            )
        ]
    return World(platform, *ids)
