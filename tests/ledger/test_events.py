"""What already exists writes its events: ingest batches, accounts, tokens, logins."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.access import service as access
from insitu.access.models import Role
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest import service as ingest
from insitu.ingest.corpus import generate_corpus
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import iter_sources
from insitu.ledger import service as ledger
from insitu.ledger import verifier
from insitu.ledger.keys import LogSigner
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.factories import encode, minimal_dataset, user_token
from tests.ledger.conftest import checkpoint


def _entries(platform: Platform, prefix: str = "") -> list[dict[str, Any]]:
    with session_scope(platform.sessions) as session:
        rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.index))
        return [ledger.entry_as_dict(e) for e in rows if e.event_type.startswith(prefix)]


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def test_an_ingest_batch_records_its_counts_and_manifest(
    platform: Platform, tmp_path: Path
) -> None:
    corpus = generate_corpus(
        tmp_path / "export", subjects=2, ct_slices=2, mr_slices=1, rows=16, columns=16
    )
    result = ingest.ingest(
        platform, iter_sources([corpus.root]), site="SITE-A", options=Options.parse("")
    )
    started, finished = _entries(platform, "ingest.")
    assert started["type"] == "ingest.batch.started"
    assert started["subject"] == finished["subject"] == f"ingest-batch:{result.batch_id}"
    assert started["actor"] == "host"
    assert started["payload"]["site"] == "SITE-A"
    assert finished["payload"]["counts"]["ingested"] == 6
    with session_scope(platform.sessions) as session:
        manifest = ingest.batch_manifest_hash(session, result.batch_id)
    assert finished["payload"]["manifest_sha256"] == manifest
    text = json.dumps(_entries(platform))
    for patient in corpus.patients:  # no patient data on the ledger
        assert patient.patient_id not in text
        assert patient.name not in text


def test_an_upload_is_recorded_under_the_uploader(platform: Platform, client: TestClient) -> None:
    token = user_token(platform, "stew", "steward")
    answer = client.post(
        "/api/v1/uploads",
        content=encode(minimal_dataset(), pixels=bytes(64)),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    with session_scope(platform.sessions) as session:
        user = access.get_user(session, "stew")
        assert user is not None
        expected = ledger.user_actor(user.id)
    assert {e["actor"] for e in _entries(platform, "ingest.")} == {expected}


def test_account_changes_and_one_login_a_day_are_recorded(
    platform: Platform, client: TestClient
) -> None:
    with session_scope(platform.sessions) as session:
        user = access.create_user(session, "dora", Role.researcher, actor="user:1")
        token = access.issue_token(session, user, actor="user:1")
    for _ in range(3):
        assert client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).is_success
    with session_scope(platform.sessions) as session:
        dora = access.get_user(session, "dora")
        assert dora is not None
        access.set_role(session, dora, Role.auditor, actor="user:1")
        access.revoke_token(session, token[:11], actor="user:1")
        access.deactivate_user(session, dora, actor="user:1")
    kinds = [e["type"] for e in _entries(platform, "access.")]
    assert kinds == [
        "access.user.created",
        "access.token.created",
        "access.login",
        "access.user.role_changed",
        "access.token.revoked",
        "access.user.deactivated",
    ]
    entries = _entries(platform, "access.")
    assert entries[3]["payload"] == {"from": "researcher", "to": "auditor"}
    assert "dora" not in json.dumps(entries)  # actors and subjects are pseudonymous ids
    assert (
        client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )


def test_entries_and_proofs_are_public_and_verify(
    platform: Platform, signer: LogSigner, client: TestClient
) -> None:
    user_token(platform, "audrey", "auditor")
    note = checkpoint(platform, signer)
    size = verifier.parse_checkpoint(verifier.parse_note(note).text).size
    root = verifier.parse_checkpoint(verifier.parse_note(note).text).root
    page = client.get("/api/v1/ledger/entries?start=0&limit=50").json()  # no login
    assert page["size"] >= size
    served = client.get("/api/v1/ledger/checkpoint")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/plain")
    assert served.text == note
    for entry in page["entries"][:size]:
        proof = client.get(f"/api/v1/ledger/proof/inclusion?index={entry['index']}&size={size}")
        body = proof.json()
        verifier.verify_inclusion(
            entry["index"],
            size,
            base64.b64decode(entry["leaf_hash"]),
            [base64.b64decode(p) for p in body["proof"]],
            root,
        )
    bad = client.get(f"/api/v1/ledger/proof/consistency?old={size + 5}&new={size + 9}")
    assert bad.status_code == 422
    key = client.get("/api/v1/ledger/key").text.strip()
    assert key == signer.verifier_key
