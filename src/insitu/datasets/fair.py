"""FAIR metadata of a dataset version: schema.org JSON-LD, DataCite (JSON and XML), DCAT-AP
with HealthDCAT-AP fields (RDF), and citation text (APA, BibTeX).

Everything here is built from a ``Citable``: the public facts of one version, with small
counts already suppressed. No function here reads the database or the blob store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, RDFS, XSD

SCHEMA_CONTEXT = "https://schema.org/"
DATACITE_NS = "http://datacite.org/schema/kernel-4"
DATACITE_SCHEMA = "http://schema.datacite.org/meta/kernel-4.5/metadata.xsd"
DCAT3 = Namespace(str(DCAT))  # rdflib's DCAT is closed to DCAT 2; version terms are DCAT 3
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
ADMS = Namespace("http://www.w3.org/ns/adms#")
HEALTHDCATAP = Namespace("http://healthdataportal.eu/ns/health#")
EU_ACCESS_RIGHT = Namespace("http://publications.europa.eu/resource/authority/access-right/")
EU_THEME = Namespace("http://publications.europa.eu/resource/authority/data-theme/")
EU_FILE_TYPE = Namespace("http://publications.europa.eu/resource/authority/file-type/")
_SPDX_ID = re.compile(r"^[A-Za-z0-9.+-]+$")


@dataclass(frozen=True)
class Citable:
    """The public facts of one dataset version."""

    name: str
    version: int
    title: str
    description: str
    authors: tuple[str, ...]
    license: str
    tier: str
    state: str
    identifier: str | None
    """The PID (a DOI with the DataCite minter)."""
    identifier_url: str | None
    landing_url: str
    publisher: str
    year: int
    issued: str
    """ISO date of the release."""
    previous_identifier_url: str | None = None
    invalidated_reason: str | None = None
    content_hash: str | None = None
    contact_email: str = ""
    pid_kind: str = "local"
    keywords: tuple[str, ...] = ()
    statistics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def is_doi(self) -> bool:
        """Whether the identifier is a DOI."""
        return self.pid_kind == "datacite"

    @property
    def license_url(self) -> str | None:
        """The SPDX page of the licence, when it is given as an SPDX identifier."""
        if self.license and _SPDX_ID.match(self.license):
            return f"https://spdx.org/licenses/{self.license}.html"
        return None


def _person(author: str) -> dict[str, str]:
    family, _, given = (part.strip() for part in author.partition(","))
    person = {"name": author}
    if given:
        person |= {"familyName": family, "givenName": given}
    return person


# -- schema.org --------------------------------------------------------------------------------


def schema_org(record: Citable) -> dict[str, Any]:
    """A schema.org ``Dataset`` (JSON-LD), as search engines' dataset search reads it."""
    document: dict[str, Any] = {
        "@context": SCHEMA_CONTEXT,
        "@type": "Dataset",
        "@id": record.identifier_url or record.landing_url,
        "name": record.title,
        "description": record.description or record.title,
        "url": record.landing_url,
        "version": str(record.version),
        "datePublished": record.issued,
        "creator": [{"@type": "Person", **_person(a)} for a in record.authors],
        "publisher": {"@type": "Organization", "name": record.publisher},
        "isAccessibleForFree": False,
        "conditionsOfAccess": "Used in situ only: images never leave the platform.",
        "keywords": list(record.keywords),
    }
    if record.identifier:
        document["identifier"] = record.identifier_url or record.identifier
    if record.license:
        document["license"] = record.license_url or record.license
    if record.previous_identifier_url:
        document["isBasedOn"] = record.previous_identifier_url
    stats = record.statistics
    if "instances" in stats:
        document["variableMeasured"] = [
            {"@type": "PropertyValue", "name": key, "value": str(stats[key])}
            for key in ("subjects", "studies", "series", "instances")
            if key in stats
        ]
    if record.invalidated_reason:
        document["creativeWorkStatus"] = f"Invalidated: {record.invalidated_reason}"
    return document


# -- DataCite ----------------------------------------------------------------------------------


def _datacite_rights(record: Citable) -> list[dict[str, str]]:
    if not record.license:
        return []
    rights = {"rights": record.license}
    if record.license_url:
        rights |= {
            "rightsUri": record.license_url,
            "rightsIdentifier": record.license,
            "rightsIdentifierScheme": "SPDX",
        }
    return [rights]


def datacite_json(record: Citable) -> dict[str, Any]:
    """DataCite metadata schema 4 attributes, as the DataCite REST API takes them."""
    attributes: dict[str, Any] = {
        "creators": [
            {"nameType": "Personal" if "," in a else "Organizational", **_person(a)}
            for a in record.authors
        ]
        or [{"name": record.publisher, "nameType": "Organizational"}],
        "titles": [{"title": record.title}],
        "publisher": {"name": record.publisher},
        "publicationYear": record.year,
        "types": {"resourceTypeGeneral": "Dataset", "resourceType": "Medical imaging dataset"},
        "version": str(record.version),
        "url": record.landing_url,
        "descriptions": [
            {"description": record.description or record.title, "descriptionType": "Abstract"}
        ],
        "subjects": [{"subject": keyword} for keyword in record.keywords],
        "dates": [{"date": record.issued, "dateType": "Issued"}],
        "rightsList": _datacite_rights(record),
        "sizes": [
            f"{record.statistics[k]} {k}"
            for k in ("subjects", "instances")
            if k in record.statistics
        ],
        "formats": ["application/dicom"],
        "schemaVersion": "http://datacite.org/schema/kernel-4",
    }
    if record.is_doi:
        attributes["doi"] = record.identifier
    else:
        attributes["identifiers"] = [{"identifier": record.identifier_url, "identifierType": "URL"}]
    if record.previous_identifier_url:
        attributes["relatedIdentifiers"] = [
            {
                "relatedIdentifier": record.previous_identifier_url,
                "relatedIdentifierType": "URL",
                "relationType": "IsNewVersionOf",
            }
        ]
    return attributes


def datacite_xml(record: Citable) -> str:
    """The same metadata in the DataCite kernel-4 XML schema."""
    ET.register_namespace("", DATACITE_NS)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")

    def tag(name: str) -> str:
        return f"{{{DATACITE_NS}}}{name}"

    def sub(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, tag(name), attrs)
        if text is not None:
            element.text = text
        return element

    data = datacite_json(record)
    root = ET.Element(
        tag("resource"),
        {
            "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation": f"{DATACITE_NS} "
            f"{DATACITE_SCHEMA}"
        },
    )
    if record.is_doi:
        sub(root, "identifier", record.identifier, identifierType="DOI")
    else:
        sub(root, "identifier", record.identifier_url, identifierType="URL")
    creators = sub(root, "creators")
    for creator in data["creators"]:
        element = sub(creators, "creator")
        sub(element, "creatorName", creator["name"], nameType=creator["nameType"])
        if "givenName" in creator:
            sub(element, "givenName", creator["givenName"])
            sub(element, "familyName", creator["familyName"])
    titles = sub(root, "titles")
    sub(titles, "title", record.title)
    sub(root, "publisher", record.publisher)
    sub(root, "publicationYear", str(record.year))
    sub(root, "resourceType", "Medical imaging dataset", resourceTypeGeneral="Dataset")
    subjects = sub(root, "subjects")
    for keyword in record.keywords:
        sub(subjects, "subject", keyword)
    dates = sub(root, "dates")
    sub(dates, "date", record.issued, dateType="Issued")
    if record.previous_identifier_url:
        related = sub(root, "relatedIdentifiers")
        sub(
            related,
            "relatedIdentifier",
            record.previous_identifier_url,
            relatedIdentifierType="URL",
            relationType="IsNewVersionOf",
        )
    sizes = sub(root, "sizes")
    for size in data["sizes"]:
        sub(sizes, "size", size)
    formats = sub(root, "formats")
    sub(formats, "format", "application/dicom")
    sub(root, "version", str(record.version))
    rights_list = sub(root, "rightsList")
    for rights in data["rightsList"]:
        attrs = {k: v for k, v in rights.items() if k != "rights"}
        sub(rights_list, "rights", rights["rights"], **attrs)
    descriptions = sub(root, "descriptions")
    sub(descriptions, "description", record.description or record.title, descriptionType="Abstract")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


# -- DCAT-AP / HealthDCAT-AP -------------------------------------------------------------------


def dcat_graph(record: Citable, catalogue_url: str) -> Graph:
    """A DCAT-AP catalogue record of the version, with HealthDCAT-AP fields where they apply."""
    graph = Graph()
    for prefix, namespace in (
        ("dcat", DCAT),
        ("dct", DCTERMS),
        ("foaf", FOAF),
        ("vcard", VCARD),
        ("adms", ADMS),
        ("healthdcatap", HEALTHDCATAP),
    ):
        graph.bind(prefix, namespace)
    dataset = URIRef(record.identifier_url or record.landing_url)
    catalogue = URIRef(catalogue_url)
    publisher = BNode()
    graph.add((publisher, RDF.type, FOAF.Agent))
    graph.add((publisher, FOAF.name, Literal(record.publisher)))

    graph.add((catalogue, RDF.type, DCAT.Catalog))
    graph.add((catalogue, DCTERMS.title, Literal(f"{record.publisher} insitu datasets")))
    graph.add(
        (
            catalogue,
            DCTERMS.description,
            Literal(
                "De-identified medical imaging datasets, used in situ: "
                "images never leave the platform."
            ),
        )
    )
    graph.add((catalogue, DCTERMS.publisher, publisher))
    graph.add((catalogue, DCAT.dataset, dataset))

    graph.add((dataset, RDF.type, DCAT.Dataset))
    graph.add((dataset, DCTERMS.title, Literal(record.title)))
    graph.add((dataset, DCTERMS.description, Literal(record.description or record.title)))
    graph.add((dataset, DCTERMS.identifier, Literal(record.identifier or record.landing_url)))
    graph.add((dataset, DCTERMS.publisher, publisher))
    graph.add((dataset, DCTERMS.issued, Literal(record.issued, datatype=XSD.date)))
    graph.add((dataset, DCAT3.version, Literal(str(record.version))))
    graph.add((dataset, DCAT.landingPage, URIRef(record.landing_url)))
    graph.add((dataset, DCAT.theme, EU_THEME.HEAL))
    graph.add((dataset, DCTERMS.accessRights, EU_ACCESS_RIGHT.NON_PUBLIC))
    graph.add((dataset, DCTERMS.type, Literal("medical imaging")))
    for keyword in record.keywords:
        graph.add((dataset, DCAT.keyword, Literal(keyword)))
    for author in record.authors:
        creator = BNode()
        graph.add((creator, RDF.type, FOAF.Person))
        graph.add((creator, FOAF.name, Literal(author)))
        graph.add((dataset, DCTERMS.creator, creator))
    if record.identifier and record.is_doi:
        other = BNode()
        graph.add((other, RDF.type, ADMS.Identifier))
        graph.add((other, RDFS.label, Literal(record.identifier)))
        graph.add((dataset, ADMS.identifier, other))
    if record.previous_identifier_url:
        graph.add((dataset, DCAT3.previousVersion, URIRef(record.previous_identifier_url)))

    contact = BNode()
    graph.add((contact, RDF.type, VCARD.Kind))
    graph.add((contact, VCARD.fn, Literal(record.publisher)))
    if record.contact_email:
        graph.add((contact, VCARD.hasEmail, URIRef(f"mailto:{record.contact_email}")))
    else:
        graph.add((contact, VCARD.hasURL, URIRef(record.landing_url)))
    graph.add((dataset, DCAT.contactPoint, contact))

    provenance = BNode()
    graph.add((provenance, RDF.type, DCTERMS.ProvenanceStatement))
    sites = ", ".join(record.provenance.get("sites", [])) or "unknown"
    options = ", ".join(record.provenance.get("deid_options", [])) or "basic profile"
    graph.add(
        (
            provenance,
            RDFS.label,
            Literal(
                f"De-identified with the DICOM PS3.15 basic profile (options: {options}) at sites: "
                f"{sites}."
            ),
        )
    )
    graph.add((dataset, DCTERMS.provenance, provenance))

    stats = record.statistics
    for key, predicate in (
        ("instances", HEALTHDCATAP.numberOfRecords),
        ("subjects", HEALTHDCATAP.numberOfUniqueIndividuals),
    ):
        if isinstance(stats.get(key), int):
            graph.add((dataset, predicate, Literal(stats[key], datatype=XSD.nonNegativeInteger)))
    graph.add((dataset, HEALTHDCATAP.healthCategory, Literal("medical imaging")))

    distribution = BNode()
    graph.add((distribution, RDF.type, DCAT.Distribution))
    graph.add((distribution, DCAT.accessURL, URIRef(record.landing_url)))
    graph.add(
        (
            distribution,
            DCTERMS.description,
            Literal("Accessible only in situ, through jobs and sessions on the platform."),
        )
    )
    graph.add(
        (
            distribution,
            DCAT.mediaType,
            URIRef("https://www.iana.org/assignments/media-types/application/dicom"),
        )
    )
    graph.add((distribution, DCTERMS.format, EU_FILE_TYPE.DCM))
    if record.license:
        graph.add(
            (
                distribution,
                DCTERMS.license,
                URIRef(record.license_url) if record.license_url else Literal(record.license),
            )
        )
    graph.add((dataset, DCAT.distribution, distribution))
    return graph


def dcat_turtle(record: Citable, catalogue_url: str) -> str:
    """``dcat_graph`` in Turtle."""
    return dcat_graph(record, catalogue_url).serialize(format="turtle")


# -- citations ---------------------------------------------------------------------------------


def _apa_author(author: str) -> str:
    family, _, given = (part.strip() for part in author.partition(","))
    if not given:
        return author
    initials = " ".join(f"{p[0]}." for p in re.split(r"[\s-]+", given) if p)
    return f"{family}, {initials}"


def citation_apa(record: Citable) -> str:
    """APA 7 citation of a data set."""
    names = [_apa_author(a) for a in record.authors] or [record.publisher]
    authors = names[0] if len(names) == 1 else ", ".join(names[:-1]) + ", & " + names[-1]
    link = record.identifier_url or record.landing_url
    return (
        f"{authors} ({record.year}). {record.title} (Version {record.version}) [Data set]. "
        f"{record.publisher}. {link}"
    )


def _bibtex_escape(text: str) -> str:
    return re.sub(r"([{}\\&%$#_])", r"\\\1", text)


def citation_bibtex(record: Citable) -> str:
    """A BibTeX ``@misc`` entry (biblatex reads it as a dataset)."""
    key = re.sub(r"[^A-Za-z0-9]", "_", f"{record.name}_v{record.version}_{record.year}")
    fields = {
        "author": " and ".join(record.authors) or record.publisher,
        "title": record.title,
        "year": str(record.year),
        "publisher": record.publisher,
        "version": str(record.version),
        "howpublished": "Dataset",
        "url": record.identifier_url or record.landing_url,
    }
    if record.is_doi and record.identifier:
        fields["doi"] = record.identifier
    body = ",\n".join(f"  {k} = {{{_bibtex_escape(v)}}}" for k, v in fields.items())
    return f"@misc{{{key},\n{body}\n}}"
