"""``insitu ledger ...`` and the account commands that write events, on a real home."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from insitu.cli.main import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INSITU_HOME", str(tmp_path / "home"))
    assert runner.invoke(app, ["init"]).exit_code == 0
    return tmp_path / "home"


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_checkpoint_verify_export_round_trip(home: Path, tmp_path: Path) -> None:
    assert _run("user", "add", "aud", "--role", "auditor")[0] == 0
    assert _run("user", "set-role", "aud", "steward")[0] == 0
    code, out, _ = _run("ledger", "checkpoint", "--json")
    assert code == 0
    checkpoint = json.loads(out)
    assert checkpoint["size"] == 5  # admin + token, aud + token, role change
    kept = tmp_path / "kept.checkpoint"
    kept.write_text(checkpoint["note"])
    code, out, _ = _run("ledger", "verify", "--checkpoint", str(kept), "--json")
    assert code == 0, out
    assert json.loads(out)["ok"] is True
    bundle = tmp_path / "bundle.json"
    script = tmp_path / "verifier.py"
    code, _, err = _run("ledger", "export", str(bundle), "--verifier", str(script))
    assert code == 0
    assert "wrote 5 entries and 2 checkpoints" in err  # init signs one, then ours
    assert script.read_text().startswith('"""Verify an insitu ledger')
    key = _run("ledger", "key")[1].strip()
    assert json.loads(bundle.read_text())["log_key"] == key


def test_verify_fails_and_says_where_after_tampering(home: Path) -> None:
    _run("ledger", "checkpoint")
    with sqlite3.connect(home / "insitu.db") as connection:
        connection.execute("UPDATE ledger_entries SET actor = 'user:99' WHERE leaf_index = 1")
    code, out, err = _run("ledger", "verify")
    assert code == 1
    assert out.startswith("FAILED")
    assert "entry 1 differs" in err


def test_verify_refuses_an_unreadable_checkpoint_file(home: Path, tmp_path: Path) -> None:
    code, _, err = _run("ledger", "verify", "--checkpoint", str(tmp_path / "missing"))
    assert code == 1
    assert "cannot read checkpoint file" in err


def test_add_witness_refuses_a_bad_key(home: Path) -> None:
    code, _, err = _run("ledger", "add-witness", "not-a-key")
    assert code == 1
    assert "cannot register witness key" in err
    code, _, err = _run("ledger", "add-witness", _run("ledger", "key")[1].strip())
    assert code == 1
    assert "cosignature key" in err


def test_host_commands_need_an_initialised_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSITU_HOME", str(tmp_path / "nowhere"))
    for command in (["ledger", "checkpoint"], ["ledger", "verify"], ["user", "deactivate", "x"]):
        code, _, err = _run(*command)
        assert code == 1
        assert "insitu init" in err


def test_account_commands_report_unknown_users_and_bad_prefixes(home: Path) -> None:
    code, _, err = _run("user", "deactivate", "ghost")
    assert code == 1
    assert "no user 'ghost'" in err
    code, _, err = _run("user", "revoke-token", "abc")
    assert code == 1
    assert "first 11 characters" in err
