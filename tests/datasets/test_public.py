"""Public metadata of published versions: landing page with JSON-LD, DataCite, DCAT-AP, PIDs
and citations; nothing of unpublished versions for anonymous callers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from pyld import jsonld
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCTERMS, FOAF, RDF

from insitu.core.platform import Platform
from insitu.datasets import service
from insitu.db import session_scope
from insitu.web.app import create_app
from tests.datasets.conftest import ingest_clinical_corpus
from tests.factories import user_token

CONTEXT_FILE = Path(__file__).parent / "data" / "schemaorg-context.jsonld"
DCAT = Namespace("http://www.w3.org/ns/dcat#")  # open: rdflib's own warns on inspection
HEALTH = Namespace("http://healthdataportal.eu/ns/health#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")


@pytest.fixture
def client(platform: Platform, tmp_path: Path) -> Iterator[TestClient]:
    ingest_clinical_corpus(platform, tmp_path, subjects=6, ct_slices=1)
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def _publish(platform: Platform, client: TestClient, name: str = "chest") -> dict[str, str]:
    steward = {"Authorization": f"Bearer {user_token(platform, 'sam', 'steward')}"}
    body = {
        "name": name,
        "title": "Chest <imaging> & more",
        "description": "Synthetic chest CT and MR.",
        "authors": ["Curie, Marie Salomea", "Röntgen, Wilhelm"],
        "license": "CC-BY-4.0",
        "tier": "synthetic",
        "query": {},
    }
    assert client.post("/api/v1/datasets", json=body, headers=steward).status_code == 201
    released = client.post(f"/api/v1/datasets/{name}/release", headers=steward).json()
    assert released["pid"] == f"{name}.v1"
    assert released["pid_registered"] is False
    published = client.post(f"/api/v1/datasets/{name}/publish", headers=steward).json()
    assert published["pid_registered"] is True
    return steward


def _vendored_loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """pyld document loader: the vendored schema.org context, and nothing from the network."""
    if url.rstrip("/") in {"https://schema.org", "http://schema.org"}:
        return {
            "contentType": "application/ld+json",
            "contextUrl": None,
            "documentUrl": url,
            "document": json.loads(CONTEXT_FILE.read_text()),
        }
    raise AssertionError(f"the JSON-LD tried to load {url}")


def test_landing_page_is_public_with_json_ld_that_expands(
    platform: Platform, client: TestClient
) -> None:
    _publish(platform, client)
    page = client.get("/datasets/chest/v1")
    assert page.status_code == 200
    html = page.text
    assert "Chest &lt;imaging&gt; &amp; more" in html  # escaped, not injected
    scripts = re.findall(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    assert len(scripts) == 1
    assert "</" not in scripts[0]  # tojson escapes '<', so no early end of the script
    document = json.loads(scripts[0])
    assert document["@type"] == "Dataset"
    expanded = jsonld.expand(document, {"documentLoader": _vendored_loader})  # type: ignore[arg-type]
    assert len(expanded) == 1
    node = expanded[0]
    schema = "http://schema.org/"
    assert node["@type"] == [schema + "Dataset"]
    assert node["@id"] == "http://127.0.0.1:8000/pid/chest.v1"
    assert node[schema + "name"][0]["@value"] == "Chest <imaging> & more"
    assert node[schema + "license"][0]["@id"] == "https://spdx.org/licenses/CC-BY-4.0.html"
    assert node[schema + "url"][0]["@id"] == "http://127.0.0.1:8000/datasets/chest/v1"
    creators = node[schema + "creator"]
    assert {c[schema + "familyName"][0]["@value"] for c in creators} == {"Curie", "Röntgen"}
    # Citations.
    apa = re.search(r'<p class="citation" id="apa">(.*?)</p>', html, re.S)
    assert apa is not None
    year = document["datePublished"][:4]
    assert apa.group(1) == (
        f"Curie, M. S., &amp; Röntgen, W. ({year}). Chest &lt;imaging&gt; &amp; more (Version 1) "
        "[Data set]. SITE. http://127.0.0.1:8000/pid/chest.v1"
    )
    assert f"@misc{{chest_v1_{year}," in html
    assert "author = {Curie, Marie Salomea and Röntgen, Wilhelm}" in html
    assert "title = {Chest &lt;imaging&gt; \\&amp; more}" in html


def test_small_counts_are_suppressed_for_the_public(platform: Platform, client: TestClient) -> None:
    steward = _publish(platform, client)
    public = client.get("/datasets/chest/v1/schema.jsonld").json()
    measured = {v["name"]: v["value"] for v in public["variableMeasured"]}
    assert measured["subjects"] == "6"
    stats = client.get("/api/v1/datasets/chest/stats", headers=steward).json()
    small = [k for k, v in stats["by_age_band"].items() if 0 < v < 5]
    assert small, stats
    page = client.get("/datasets/chest/v1").text
    for band in small:
        assert f"{band} (&lt;5)" in page
        assert f"{band} ({stats['by_age_band'][band]})" not in page
    # The steward, signed in through the browser cookie, sees the exact counts.
    client.cookies.set("insitu_session", steward["Authorization"].split()[1])
    page = client.get("/datasets/chest/v1").text
    client.cookies.clear()
    assert f"{small[0]} ({stats['by_age_band'][small[0]]})" in page


def test_datacite_json_and_xml(platform: Platform, client: TestClient) -> None:
    _publish(platform, client)
    answer = client.get("/datasets/chest/v1/datacite.json")
    assert answer.headers["content-type"].startswith("application/vnd.api+json")
    attributes = answer.json()["data"]["attributes"]
    assert attributes["titles"] == [{"title": "Chest <imaging> & more"}]
    assert attributes["types"]["resourceTypeGeneral"] == "Dataset"
    assert attributes["publisher"] == {"name": "SITE"}
    assert attributes["identifiers"] == [
        {"identifier": "http://127.0.0.1:8000/pid/chest.v1", "identifierType": "URL"}
    ]
    assert attributes["creators"][0]["nameType"] == "Personal"
    assert attributes["rightsList"][0]["rightsIdentifier"] == "CC-BY-4.0"
    xml = client.get("/datasets/chest/v1/datacite.xml").text
    root = ET.fromstring(xml)  # noqa: S314 - our own output
    ns = {"d": "http://datacite.org/schema/kernel-4"}
    assert root.tag == "{http://datacite.org/schema/kernel-4}resource"
    assert root.findtext("d:titles/d:title", namespaces=ns) == "Chest <imaging> & more"
    assert root.find("d:identifier", ns).get("identifierType") == "URL"  # type: ignore[union-attr]
    assert root.findtext("d:publicationYear", namespaces=ns) == str(attributes["publicationYear"])
    assert [e.text for e in root.findall("d:creators/d:creator/d:familyName", ns)] == [
        "Curie",
        "Röntgen",
    ]


def test_dcat_ap_has_the_required_fields(platform: Platform, client: TestClient) -> None:
    _publish(platform, client)
    answer = client.get("/datasets/chest/v1/dcat.ttl")
    assert answer.headers["content-type"].startswith("text/turtle")
    graph = Graph().parse(data=answer.text, format="turtle")
    catalogues = list(graph.subjects(RDF.type, DCAT.Catalog))
    datasets = list(graph.subjects(RDF.type, DCAT.Dataset))
    assert len(catalogues) == 1
    assert datasets == [URIRef("http://127.0.0.1:8000/pid/chest.v1")]
    catalogue, dataset = catalogues[0], datasets[0]

    def one(subject: Any, predicate: URIRef) -> Any:
        values = list(graph.objects(subject, predicate))
        assert values, f"{subject} lacks {predicate}"
        return values[0]

    # DCAT-AP mandatory: catalogue title, description, publisher, dataset; dataset title,
    # description; distribution access URL.
    for predicate in (DCTERMS.title, DCTERMS.description, DCTERMS.publisher):
        one(catalogue, predicate)
    assert one(catalogue, DCAT.dataset) == dataset
    assert str(one(dataset, DCTERMS.title)) == "Chest <imaging> & more"
    assert str(one(dataset, DCTERMS.description)) == "Synthetic chest CT and MR."
    distribution = one(dataset, DCAT.distribution)
    assert str(one(distribution, DCAT.accessURL)) == "http://127.0.0.1:8000/datasets/chest/v1"
    assert str(one(distribution, DCTERMS.license)).endswith("CC-BY-4.0.html")
    # DCAT-AP recommended and HealthDCAT-AP mandatory fields.
    assert str(one(one(dataset, DCTERMS.publisher), FOAF.name)) == "SITE"
    assert one(one(dataset, DCAT.contactPoint), RDF.type) == VCARD.Kind
    assert str(one(dataset, DCTERMS.accessRights)).endswith("access-right/NON_PUBLIC")
    assert str(one(dataset, DCAT.theme)).endswith("data-theme/HEAL")
    assert str(one(dataset, DCTERMS.identifier)) == "chest.v1"
    one(dataset, DCTERMS.provenance)
    one(dataset, DCTERMS.issued)
    assert {str(k) for k in graph.objects(dataset, DCAT.keyword)} >= {"CT", "MR"}
    assert int(one(dataset, HEALTH.numberOfUniqueIndividuals)) == 6
    assert int(one(dataset, HEALTH.numberOfRecords)) > 6


def test_pid_resolves_to_the_landing_page(platform: Platform, client: TestClient) -> None:
    _publish(platform, client)
    answer = client.get("/pid/chest.v1", follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/datasets/chest/v1"
    assert client.get("/pid/chest.v9", follow_redirects=False).status_code == 404


def test_unpublished_versions_are_not_public_and_invalidated_pages_say_why(
    platform: Platform, client: TestClient
) -> None:
    steward = _publish(platform, client)
    draft = client.post("/api/v1/datasets/chest/new-version", headers=steward).json()
    assert draft["version"] == 2
    assert client.get("/datasets/chest/v2").status_code == 404
    assert client.get("/datasets/chest/v2/datacite.json").status_code == 404
    released = client.post("/api/v1/datasets/chest/release", headers=steward).json()
    assert client.get("/pid/" + released["pid"], follow_redirects=False).status_code == 404
    assert client.get("/datasets/chest/v2", headers=steward).status_code == 200
    # v2 links back to v1 in its metadata.
    v2 = client.get("/datasets/chest/v2/datacite.json", headers=steward).json()
    related = v2["data"]["attributes"]["relatedIdentifiers"]
    assert related == [
        {
            "relatedIdentifier": "http://127.0.0.1:8000/pid/chest.v1",
            "relatedIdentifierType": "URL",
            "relationType": "IsNewVersionOf",
        }
    ]
    # Invalidating v1 keeps its public landing page, which says why.
    answer = client.post(
        "/api/v1/datasets/chest/new-version", headers=steward
    )  # v3, so that v1 is not the newest; invalidate v1 through the service
    assert answer.status_code == 201
    with session_scope(platform.sessions) as session:
        v1 = service.get_dataset(session, "chest", 1)
        assert v1 is not None
        service.invalidate(session, v1, "labels were wrong", None)
    page = client.get("/datasets/chest/v1")
    assert page.status_code == 200
    assert "This version was invalidated" in page.text
    assert "labels were wrong" in page.text
