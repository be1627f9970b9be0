"""Proofs built from stored subtree hashes verify with the RFC 9162 verifier, for every shape."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from insitu.ledger import tree, verifier

SIZE = 37


def _leaves(n: int) -> list[bytes]:
    return [verifier.leaf_hash(f"leaf {i}".encode()) for i in range(n)]


def _store(n: int, batches: tuple[int, ...] = (1,)) -> dict[int, bytes]:
    """Append n leaves in batches of the given sizes (cycled), as the service does."""
    stored: dict[int, bytes] = {}
    leaves = _leaves(n)
    size = 0
    turn = 0
    while size < n:
        count = min(batches[turn % len(batches)], n - size)
        created, _ = tree.append_nodes(size, stored, leaves[size : size + count])
        stored.update(created)
        size += count
        turn += 1
    return stored


def _fetch(stored: dict[int, bytes]) -> tuple[list[int], object]:
    calls: list[int] = []

    def fetch(ids: set[int]) -> Mapping[int, bytes]:
        calls.append(len(ids))
        return {i: stored[i] for i in ids}

    return calls, fetch


@pytest.mark.parametrize("batches", [(1,), (3, 7), (64,)])
def test_roots_match_a_plain_recomputation(batches: tuple[int, ...]) -> None:
    stored = _store(SIZE, batches)
    leaves = _leaves(SIZE)
    for size in range(SIZE + 1):
        expected = verifier.root_of(leaves[:size])
        assert tree.range_hash(0, size, stored) == expected


def test_every_inclusion_proof_verifies_and_needs_one_fetch() -> None:
    stored = _store(SIZE)
    leaves = _leaves(SIZE)
    for size in range(1, SIZE + 1):
        root = verifier.root_of(leaves[:size])
        for index in range(size):
            calls, fetch = _fetch(stored)
            proof = tree.hashes_for(tree.inclusion_ranges(index, 0, size), fetch)  # type: ignore[arg-type]
            assert len(calls) == 1
            verifier.verify_inclusion(index, size, leaves[index], proof, root)
            with pytest.raises(verifier.VerificationError):
                verifier.verify_inclusion(
                    index, size, leaves[index - 1] if index else b"x" * 32, proof, root
                )


def test_every_consistency_proof_verifies() -> None:
    stored = _store(SIZE, (5,))
    leaves = _leaves(SIZE)
    for new in range(1, SIZE + 1):
        new_root = verifier.root_of(leaves[:new])
        for old in range(1, new + 1):
            old_root = verifier.root_of(leaves[:old])
            _calls, fetch = _fetch(stored)
            proof = tree.hashes_for(tree.consistency_ranges(old, new), fetch)  # type: ignore[arg-type]
            verifier.verify_consistency(old, new, old_root, new_root, proof)
            if old < new:
                with pytest.raises(verifier.VerificationError):
                    verifier.verify_consistency(old, new, old_root, old_root, proof)


def test_proofs_read_logarithmically_many_nodes() -> None:
    size = 1_000_003
    ranges = tree.inclusion_ranges(123_456, 0, size)
    assert len(tree.needed_nodes(ranges)) <= 2 * size.bit_length()
    ranges = tree.consistency_ranges(654_321, size)
    assert len(tree.needed_nodes(ranges)) <= 2 * size.bit_length()
