"""RFC 9162 hashing and proof verification against transparency-dev/merkle's vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from insitu.ledger import verifier
from insitu.ledger.verifier import VerificationError

VECTORS = json.loads((Path(__file__).parent / "data" / "merkle-proof-vectors.json").read_text())


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(values: list[str] | None) -> list[bytes]:
    return [_b64(v) for v in values or []]


def test_root_hashes_for_sizes_0_to_8() -> None:
    leaves = [bytes.fromhex(h) for h in VECTORS["tree"]["leaf_inputs_hex"]]
    expected = VECTORS["tree"]["root_hashes_hex_by_size"]
    assert len(expected) == 9
    for size, root in enumerate(expected):
        assert verifier.root_of(verifier.leaf_hash(x) for x in leaves[:size]).hex() == root


@pytest.mark.parametrize(
    "case", VECTORS["inclusion"], ids=lambda c: f"{c['file']}".removeprefix("testdata/")
)
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        verifier.verify_inclusion(
            case["leafIdx"],
            case["treeSize"],
            _b64(case["leafHash"]),
            _proof(case["proof"]),
            _b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


@pytest.mark.parametrize(
    "case", VECTORS["consistency"], ids=lambda c: f"{c['file']}".removeprefix("testdata/")
)
def test_consistency_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        verifier.verify_consistency(
            case["size1"],
            case["size2"],
            _b64(case["root1"]),
            _b64(case["root2"]),
            _proof(case["proof"]),
        )

    if case["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


def test_vectors_are_mostly_rejections() -> None:
    assert len(VECTORS["inclusion"]) == 98
    assert len(VECTORS["consistency"]) == 98
    assert sum(c["wantErr"] for c in VECTORS["inclusion"]) == 92
    assert sum(c["wantErr"] for c in VECTORS["consistency"]) == 92
