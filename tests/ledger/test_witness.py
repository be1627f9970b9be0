"""A partner's witness against a live insitu server: cosigning, and catching a forked log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from typer.testing import CliRunner

from insitu.cli.main import app
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.ledger import tree, verifier
from insitu.ledger.keys import LogSigner
from insitu.ledger.models import LedgerEntry, LedgerNode
from insitu.ledger.witness import WitnessState
from tests.ledger.conftest import append_events, checkpoint
from tests.servers import live_app

runner = CliRunner()
WITNESS = "hospital-b.example/witness"


@pytest.fixture
def server(platform: Platform, signer: LogSigner) -> Iterator[str]:
    append_events(platform, 10)
    checkpoint(platform, signer)
    with live_app(platform) as url:
        yield url


def _witness(url: str, state: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["ledger", "witness", url, "--state", str(state), "--name", WITNESS, *extra]
    )
    return result.exit_code, result.stdout + result.stderr


def _register(platform: Platform, state: Path) -> str:
    vkey = WitnessState(state, WITNESS).verifier_key()
    with session_scope(platform.sessions) as session:
        ledger.register_witness(session, vkey, ledger.HOST_ACTOR)
    return vkey


def test_witness_cosigns_once_registered_and_the_cosignature_is_shown(
    platform: Platform, signer: LogSigner, server: str, tmp_path: Path
) -> None:
    state = tmp_path / "witness"
    code, output = _witness(server, state, "--log-key", signer.verifier_key)
    assert code == 1
    assert "insitu ledger add-witness" in output
    vkey = _register(platform, state)
    code, output = _witness(server, state)
    assert code == 0, output
    assert "cosigned size 10" in output

    served = httpx.get(f"{server}/api/v1/ledger/checkpoint").text
    note = verifier.parse_note(served)
    assert [name for name, _ in note.signatures] == [signer.origin, WITNESS]
    witness_key = verifier.parse_verifier_key(vkey)
    assert verifier.signature_valid(note, note.signatures[1][1], witness_key)
    listed = httpx.get(f"{server}/api/v1/ledger/witnesses").json()
    assert listed == [{"name": WITNESS, "key": vkey}]
    shown = httpx.get(f"{server}/ledger").text  # the public page says who cosigned
    assert f"<code>{WITNESS}</code>: cosigned the newest checkpoint" in shown
    assert note.render().splitlines()[0] in shown

    append_events(platform, 5, start=10)
    checkpoint(platform, signer)
    code, output = _witness(server, state)
    assert code == 0, output
    assert "cosigned size 16 (from 10)" in output  # 10 + the witness registration + 5


def test_a_forged_cosignature_is_refused(
    platform: Platform, signer: LogSigner, server: str, tmp_path: Path
) -> None:
    state = tmp_path / "witness"
    _register(platform, state)
    raw = httpx.get(f"{server}/api/v1/ledger/checkpoint").text
    note = verifier.parse_note(raw)
    impostor = verifier.cosign(note, WITNESS, Ed25519PrivateKey.generate(), 1_700_000_000)
    note.signatures.append((WITNESS, impostor))
    answer = httpx.post(f"{server}/api/v1/ledger/cosignatures", content=note.render())
    assert answer.status_code == 403
    stranger = verifier.parse_note(raw)
    stranger.signatures.append(
        (
            "stranger.example/w",
            verifier.cosign(
                stranger, "stranger.example/w", Ed25519PrivateKey.generate(), 1_700_000_000
            ),
        )
    )
    answer = httpx.post(f"{server}/api/v1/ledger/cosignatures", content=stranger.render())
    assert answer.status_code == 403
    assert "no cosignature of a registered witness" in answer.json()["detail"]


def test_a_forked_log_is_caught_by_the_witness(
    platform: Platform, signer: LogSigner, server: str, tmp_path: Path
) -> None:
    state = tmp_path / "witness"
    _register(platform, state)
    assert _witness(server, state)[0] == 0  # saw size 10
    # The operator rewrites history from entry 6 on, rebuilds the hashes and signs anew: the
    # log now shows a second history that does not extend the one the witness saw.
    with platform.engine.begin() as connection:
        connection.execute(text("DELETE FROM ledger_entries WHERE leaf_index >= 6"))
        connection.execute(text("DELETE FROM ledger_nodes"))
    with session_scope(platform.sessions) as session:
        entries = session.query(LedgerEntry).order_by(LedgerEntry.index).all()
        created, _ = tree.append_nodes(0, {}, [ledger.entry_hash(e) for e in entries])
        session.add_all(LedgerNode(node_id=n, hash=h) for n, h in created)
    append_events(platform, 8, start=6, tag="other-history")
    checkpoint(platform, signer)
    code, output = _witness(server, state)
    assert code == 2
    assert "FORK DETECTED" in output
    evidence = list(state.glob("fork-evidence-*.txt"))
    assert len(evidence) == 1
    assert "does not extend size 10" in evidence[0].read_text()


def test_proof_commands_check_the_server_against_its_signature(
    platform: Platform,
    signer: LogSigner,
    server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INSITU_URL", server)
    key = ["--log-key", signer.verifier_key]
    kept = tmp_path / "kept"
    kept.write_text(httpx.get(f"{server}/api/v1/ledger/checkpoint").text)
    entry = httpx.get(f"{server}/api/v1/ledger/proof/inclusion?index=3&size=10").json()
    assert entry["index"] == 3
    result = runner.invoke(app, ["ledger", "proof", "inclusion", "3", *key])
    assert result.exit_code == 0, result.stderr
    assert "OK: entry 3 is in the signed log of size 10" in result.stdout
    mine = tmp_path / "entry.json"
    mine.write_text(
        json.dumps(
            {
                "index": 3,
                "time": "x",
                "type": "test.event",
                "actor": "a",
                "subject": "b",
                "payload": {},
            }
        )
    )
    result = runner.invoke(app, ["ledger", "proof", "inclusion", "3", "--entry", str(mine), *key])
    assert result.exit_code == 1
    assert "inclusion proof FAILED" in result.stderr
    append_events(platform, 6, start=10)
    checkpoint(platform, signer)
    result = runner.invoke(app, ["ledger", "proof", "consistency", str(kept), *key])
    assert result.exit_code == 0, result.stderr
    assert "extends your checkpoint of size 10" in result.stdout
    wrong_key = [
        "--log-key",
        verifier.verifier_key(signer.origin, Ed25519PrivateKey.generate().public_key()),
    ]
    result = runner.invoke(app, ["ledger", "proof", "consistency", str(kept), *wrong_key])
    assert result.exit_code == 1
    assert "does not verify" in result.stderr
