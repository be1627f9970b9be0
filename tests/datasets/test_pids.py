"""PID minters: one conformance test for every minter, and the DataCite minter against a local
fake of the DataCite REST API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from insitu.core.platform import Platform, open_platform
from insitu.datasets.pids import DataCiteMinter, LocalMinter, Minter, MinterError
from insitu.ingest import service as ingest
from insitu.ingest.corpus import generate_corpus
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import iter_sources
from insitu.web.app import create_app
from tests.conftest import make_settings
from tests.datasets.fake_datacite import FakeDataCite, fake_datacite
from tests.factories import user_token

METADATA = {
    "titles": [{"title": "T"}],
    "creators": [{"name": "A"}],
    "publisher": {"name": "P"},
    "publicationYear": 2026,
    "types": {"resourceTypeGeneral": "Dataset"},
}


@pytest.fixture
def datacite() -> Iterator[FakeDataCite]:
    with fake_datacite() as fake:
        yield fake


def _datacite_minter(fake: FakeDataCite, password: str | None = None) -> DataCiteMinter:
    return DataCiteMinter(fake.url, fake.prefix, fake.user, password or fake.password)


@pytest.mark.parametrize("kind", ["local", "datacite"])
def test_every_minter_reserves_and_registers_idempotently(
    kind: str, datacite: FakeDataCite
) -> None:
    minter: Minter = (
        LocalMinter("https://insitu.example.org/")
        if kind == "local"
        else _datacite_minter(datacite)
    )
    assert isinstance(minter, Minter)
    identifier = minter.identifier_for("chest.v1")
    assert identifier != minter.identifier_for("chest.v2")
    minter.reserve(identifier)
    minter.reserve(identifier)  # again, as after a rolled-back release
    minter.register(identifier, "https://insitu.example.org/datasets/chest/v1", METADATA)
    minter.register(identifier, "https://insitu.example.org/datasets/chest/v1", METADATA)
    assert minter.resolver_url(identifier).startswith("https://")
    assert minter.resolver_url(identifier).endswith(identifier)


def test_datacite_draft_then_findable(datacite: FakeDataCite) -> None:
    minter = _datacite_minter(datacite)
    doi = minter.identifier_for("chest.v1")
    assert doi == "10.80000/chest.v1"
    minter.reserve(doi)
    assert datacite.dois[doi]["state"] == "draft"
    minter.register(doi, "https://x.example/datasets/chest/v1", METADATA)
    assert datacite.dois[doi]["state"] == "findable"
    assert datacite.dois[doi]["url"] == "https://x.example/datasets/chest/v1"
    assert minter.resolver_url(doi) == "https://doi.org/10.80000/chest.v1"


def test_datacite_refusals_are_explained(datacite: FakeDataCite) -> None:
    with pytest.raises(MinterError, match=r"HTTP 401: Bad credentials.*DATACITE_PASSWORD"):
        _datacite_minter(datacite, password="wrong").reserve("10.80000/x.v1")
    with pytest.raises(MinterError, match="permission to use this prefix"):
        _datacite_minter(datacite).reserve("10.99999/x.v1")
    with pytest.raises(MinterError, match="missing mandatory metadata: titles"):
        _datacite_minter(datacite).register("10.80000/x.v1", "https://x/", {"creators": []})
    with pytest.raises(MinterError, match="not a DOI prefix"):
        DataCiteMinter(datacite.url, "doi:10.1", "u", "p")
    unreachable = DataCiteMinter("http://127.0.0.1:9", "10.80000", "u", "p")
    with pytest.raises(MinterError, match="cannot be reached"):
        unreachable.reserve("10.80000/x.v1")


@pytest.fixture
def datacite_platform(tmp_path: Path, datacite: FakeDataCite) -> Iterator[Platform]:
    (tmp_path / "home").mkdir()
    settings = make_settings(
        tmp_path / "home",
        pid_minter="datacite",
        datacite_api_url=datacite.url,
        datacite_prefix=datacite.prefix,
        datacite_repository_id=datacite.user,
        datacite_password=datacite.password,
        public_url="https://insitu.example.org",
        publisher="Example Hospital",
    )
    platform = open_platform(settings)
    corpus = generate_corpus(tmp_path / "export", subjects=1, ct_slices=1, mr_slices=0)
    ingest.ingest(platform, iter_sources([corpus.root]), site="S", options=Options.parse(""))
    yield platform
    platform.close()


def test_release_reserves_a_doi_and_publish_registers_it(
    datacite_platform: Platform, datacite: FakeDataCite
) -> None:
    steward = {"Authorization": f"Bearer {user_token(datacite_platform, 'sam', 'steward')}"}
    with TestClient(create_app(datacite_platform)) as client:
        body = {"name": "chest", "title": "Chest", "authors": ["Curie, Marie"], "query": {}}
        assert client.post("/api/v1/datasets", json=body, headers=steward).status_code == 201
        # DataCite refusing (here: the password changed there) fails the release cleanly.
        datacite.password = "rotated"
        refused = client.post("/api/v1/datasets/chest/release", headers=steward)
        assert refused.status_code == 502
        assert "Bad credentials" in refused.json()["detail"]
        shown = client.get("/api/v1/datasets/chest", headers=steward).json()
        assert (shown["state"], shown["pid"]) == ("draft", None)
        datacite.password = "s3cret"
        released = client.post("/api/v1/datasets/chest/release", headers=steward).json()
        assert released["pid"] == "10.80000/chest.v1"
        assert datacite.dois["10.80000/chest.v1"]["state"] == "draft"
        client.post("/api/v1/datasets/chest/publish", headers=steward)
        record = datacite.dois["10.80000/chest.v1"]
        assert record["state"] == "findable"
        assert record["url"] == "https://insitu.example.org/datasets/chest/v1"
        assert record["titles"] == [{"title": "Chest"}]
        assert record["publisher"] == {"name": "Example Hospital"}
        assert record["creators"][0]["familyName"] == "Curie"
        page = client.get("/datasets/chest/v1").text
        assert 'href="https://doi.org/10.80000/chest.v1"' in page
        assert "doi = {10.80000/chest.v1}" in page
        # The local resolver knows DOIs too.
        answer = client.get("/pid/10.80000/chest.v1", follow_redirects=False)
        assert answer.headers["location"] == "/datasets/chest/v1"


def test_misconfigured_minters_stop_the_platform_with_the_setting_to_fix(tmp_path: Path) -> None:
    from insitu.settings import SettingsError

    (tmp_path / "home").mkdir()
    for overrides, message in (
        ({"pid_minter": "handle"}, "INSITU_PID_MINTER 'handle' is unknown"),
        ({"pid_minter": "datacite", "datacite_prefix": ""}, "INSITU_DATACITE_PREFIX"),
        (
            {"pid_minter": "datacite", "datacite_prefix": "10.80000"},
            "INSITU_DATACITE_REPOSITORY_ID and INSITU_DATACITE_PASSWORD",
        ),
    ):
        with pytest.raises(SettingsError, match=message):
            open_platform(make_settings(tmp_path / "home", **overrides))
