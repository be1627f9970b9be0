"""Stored subtree hashes: appending leaves and answering RFC 9162 proofs in O(log n) reads.

A node is the hash of a perfect, aligned subtree: ``2**level`` leaves starting at leaf
``index * 2**level``. Appending leaf ``i`` stores node (0, i) and every node it completes. Any
range a proof needs is a left-to-right run of such nodes, so a proof is one query for at most
about ``2 * log2(n)`` node ids. Pure functions: the service does the reading and writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from insitu.ledger.verifier import EMPTY_ROOT, node_hash

LEVEL_SHIFT = 56  # node id = level << 56 | index: 2**56 leaves is more than any log needs


def node_id(level: int, index: int) -> int:
    """The stored key of node (level, index)."""
    return (level << LEVEL_SHIFT) | index


def perfect_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """Leaves [start, end) as aligned perfect subtrees, left to right, largest first."""
    nodes: list[tuple[int, int]] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):  # shrink until the subtree is aligned
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def frontier(size: int) -> list[tuple[int, int]]:
    """The perfect subtrees that make up a tree of ``size`` leaves (its right edge)."""
    return perfect_nodes(0, size)


def range_hash(start: int, end: int, lookup: Mapping[int, bytes]) -> bytes:
    """MTH of leaves [start, end) from stored nodes (RFC 9162: right-leaning fold)."""
    nodes = perfect_nodes(start, end)
    if not nodes:
        return EMPTY_ROOT
    result = lookup[node_id(*nodes[-1])]
    for level, index in reversed(nodes[:-1]):
        result = node_hash(lookup[node_id(level, index)], result)
    return result


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def inclusion_ranges(leaf_index: int, start: int, end: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.3.1 PATH(m, D[start:end]) as leaf ranges, bottom to top."""
    ranges: list[tuple[int, int]] = []
    while end - start > 1:
        middle = start + _split(end - start)
        if leaf_index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    return list(reversed(ranges))


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.4.1 PROOF(m, D[0:n]) as leaf ranges, bottom to top."""
    ranges: list[tuple[int, int]] = []
    start, end, m, complete = 0, new_size, old_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        ranges.append((start, end))
    return list(reversed(ranges))


def needed_nodes(ranges: Iterable[tuple[int, int]]) -> set[int]:
    """Node ids to fetch for the hashes of ``ranges``."""
    return {node_id(level, index) for a, b in ranges for level, index in perfect_nodes(a, b)}


def hashes_for(
    ranges: list[tuple[int, int]], fetch: Callable[[set[int]], Mapping[int, bytes]]
) -> list[bytes]:
    """The hashes of ``ranges`` with a single ``fetch`` of stored nodes."""
    lookup = fetch(needed_nodes(ranges))
    return [range_hash(a, b, lookup) for a, b in ranges]


def append_nodes(
    size: int, frontier_hashes: Mapping[int, bytes], leaf_hashes: Iterable[bytes]
) -> tuple[list[tuple[int, bytes]], list[tuple[int, int, bytes]]]:
    """New nodes (id, hash) for leaves appended to a tree of ``size``, and the new frontier."""
    stack = [
        (level, index, frontier_hashes[node_id(level, index)]) for level, index in frontier(size)
    ]
    created: list[tuple[int, bytes]] = []
    position = size
    for leaf in leaf_hashes:
        level, index, current = 0, position, leaf
        created.append((node_id(0, index), current))
        while stack and stack[-1][0] == level:
            _, left_index, left = stack.pop()
            level, index = level + 1, left_index >> 1
            current = node_hash(left, current)
            created.append((node_id(level, index), current))
        stack.append((level, index, current))
        position += 1
    return created, stack
