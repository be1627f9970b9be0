"""The exported bundle verifies offline, with only the standard library and `cryptography`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cryptography
import pytest

from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.ledger import verifier
from insitu.ledger.keys import LogSigner
from tests.ledger.conftest import append_events, checkpoint


@pytest.fixture
def bundle_file(platform: Platform, signer: LogSigner, tmp_path: Path) -> Path:
    append_events(platform, 9)
    checkpoint(platform, signer)
    append_events(platform, 4, start=9)
    checkpoint(platform, signer)
    with session_scope(platform.sessions) as session:
        bundle = ledger.export_bundle(session, signer)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, ensure_ascii=False, separators=(",", ":")))
    return path


def _standalone(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the verifier with site processing off and only `cryptography` importable."""
    packages = str(Path(cryptography.__file__).parent.parent)
    return subprocess.run(
        [sys.executable, "-S", str(script), *args],
        env={"PYTHONPATH": packages, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bundle_verifies_offline_without_insitu(
    bundle_file: Path, signer: LogSigner, tmp_path: Path
) -> None:
    script = tmp_path / "offline" / "verifier.py"
    script.parent.mkdir()
    script.write_bytes(Path(verifier.__file__).read_bytes())
    (script.parent / "probe.py").write_text("import insitu\n")
    probe = _standalone(script.parent / "probe.py")
    assert probe.returncode != 0
    assert "No module named 'insitu'" in probe.stderr
    result = _standalone(script, str(bundle_file), "--key", signer.verifier_key)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 13 entries, 2 signed checkpoints")
    wrong_key = _standalone(script, str(bundle_file), "--key", "someone+00000000+AQ==")
    assert wrong_key.returncode == 1


def test_any_changed_byte_fails_verification(bundle_file: Path, tmp_path: Path) -> None:
    original = bundle_file.read_bytes()
    assert verifier.main([str(bundle_file)]) == 0
    changed = tmp_path / "changed.json"
    step = max(1, len(original) // 400)
    tried = 0
    for position in range(0, len(original), step):
        data = bytearray(original)
        data[position] ^= 0x01
        changed.write_bytes(bytes(data))
        assert verifier.main([str(changed)]) == 1, (
            position,
            original[position - 20 : position + 20],
        )
        tried += 1
    assert tried >= 400


def test_a_removed_entry_or_checkpoint_fails(bundle_file: Path) -> None:
    bundle = json.loads(bundle_file.read_text())
    without_last = {**bundle, "entries": bundle["entries"][:-1]}
    with pytest.raises(verifier.VerificationError, match="removed"):
        verifier.verify_bundle(without_last)
    reordered = {
        **bundle,
        "entries": [bundle["entries"][1], bundle["entries"][0], *bundle["entries"][2:]],
    }
    with pytest.raises(verifier.VerificationError, match="claims index"):
        verifier.verify_bundle(reordered)
