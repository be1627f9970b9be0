"""Verify an insitu ledger with nothing but Python's standard library and ``cryptography``.

This file is the single definition of how the ledger is hashed and signed: the platform imports
it, and auditors run it on its own, with the platform switched off::

    python verifier.py bundle.json [--key 'origin+1a2b3c4d+AXNv...']

- Merkle tree hashing, inclusion and consistency proof verification: RFC 9162 section 2.1.
- Leaves: canonical JSON (sorted keys, no spaces, UTF-8) of every stored column of an entry.
- Checkpoints: C2SP tlog-checkpoint in a C2SP signed note, Ed25519; witness cosignatures:
  C2SP tlog-cosignature (``cosignature/v1``).

It must not import anything from ``insitu``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

BUNDLE_FORMAT = "insitu-ledger-bundle/v1"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
SIGNATURE_PREFIX = "\u2014 "  # em dash and a space start every signature line
ED25519_NOTE = 0x01
ED25519_COSIGNATURE = 0x04


class VerificationError(Exception):
    """Something does not verify; the message says what and where."""


def strict_b64decode(text: str) -> bytes:
    """Standard base64 in its one canonical spelling: no stray characters, zero pad bits.

    Plain decoding ignores the unused bits of the last character, so two spellings would
    give the same bytes; a changed byte must never go unnoticed.
    """
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode() != text:
        raise ValueError("not canonical base64")
    return data


# -- RFC 9162 hashing ---------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """MTH of one leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class RootBuilder:
    """Tree heads of a growing log, one leaf at a time, in O(log n) memory."""

    def __init__(self) -> None:
        self.size = 0
        self._levels: list[int] = []
        self._hashes: list[bytes] = []

    def add(self, hash_of_leaf: bytes) -> None:
        """Append the leaf hash of entry ``size``."""
        levels, hashes = self._levels, self._hashes
        level = 0
        current = hash_of_leaf
        while levels and levels[-1] == level:
            levels.pop()
            current = node_hash(hashes.pop(), current)
            level += 1
        levels.append(level)
        hashes.append(current)
        self.size += 1

    def root(self) -> bytes:
        """The root hash of the leaves added so far."""
        if not self._hashes:
            return EMPTY_ROOT
        current = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            current = node_hash(left, current)
        return current


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """The root hash of a whole list of leaf hashes."""
    builder = RootBuilder()
    for item in leaf_hashes:
        builder.add(item)
    return builder.root()


def _check_hashes(what: str, *hashes: bytes) -> None:
    for value in hashes:
        if len(value) != HASH_SIZE:
            raise VerificationError(f"{what}: a hash of {len(value)} bytes, expected {HASH_SIZE}")


def verify_inclusion(
    leaf_index: int, tree_size: int, hash_of_leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2: raise VerificationError unless the leaf is in the tree with ``root``."""
    _check_hashes("inclusion proof", hash_of_leaf, root)
    if leaf_index < 0 or leaf_index >= tree_size:
        raise VerificationError(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    fn, sn, result = leaf_index, tree_size - 1, hash_of_leaf
    for sibling in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree is deep")
    if result != root:
        raise VerificationError("inclusion proof does not lead to the root hash")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: raise VerificationError unless tree ``size2`` extends tree ``size1``."""
    if size1 < 0 or size2 < size1:
        raise VerificationError(f"a tree of size {size2} cannot extend one of size {size1}")
    if size1 == 0:
        raise VerificationError("consistency with the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise VerificationError("trees of equal size need an empty consistency proof")
        if root1 != root2:
            raise VerificationError("two different root hashes for the same tree size")
        return
    if not proof:
        raise VerificationError("empty consistency proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # an exact power of two: its root is the proof's seed
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for sibling in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            first = node_hash(sibling, first)
            second = node_hash(sibling, second)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = node_hash(second, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is shorter than the tree is deep")
    if first != root1:
        raise VerificationError(f"consistency proof does not reproduce the root of size {size1}")
    if second != root2:
        raise VerificationError(f"consistency proof does not reproduce the root of size {size2}")


# -- entries ------------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant whitespace, non-ASCII kept as UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_leaf(
    index: int, recorded_at: str, event_type: str, actor: str, subject: str, payload: str
) -> bytes:
    """The leaf of one entry: canonical JSON of all its stored columns.

    ``payload`` is stored as canonical JSON text and spliced in as it is, so the result equals
    ``canonical_json`` of the whole entry while a changed payload byte still changes the leaf.
    """
    dumps = json.dumps
    return (
        f'{{"actor":{dumps(actor, ensure_ascii=False)},"index":{index},"payload":{payload},'
        f'"subject":{dumps(subject, ensure_ascii=False)},'
        f'"time":{dumps(recorded_at, ensure_ascii=False)},'
        f'"type":{dumps(event_type, ensure_ascii=False)}}}'
    ).encode()


# -- signed notes and checkpoints -----------------------------------------------------------------


def key_id(name: str, algorithm: int, public_key: bytes) -> bytes:
    """C2SP signed-note key ID: SHA-256(name || 0x0A || algorithm || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public_key).digest()[:4]


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def verifier_key(name: str, key: Ed25519PublicKey, algorithm: int = ED25519_NOTE) -> str:
    """A C2SP vkey: ``name+hex key ID+base64(algorithm || public key)``."""
    raw = raw_public_key(key)
    encoded = base64.b64encode(bytes([algorithm]) + raw).decode()
    return f"{name}+{key_id(name, algorithm, raw).hex()}+{encoded}"


@dataclass(frozen=True)
class VerifierKey:
    """A parsed vkey."""

    name: str
    algorithm: int
    public_key: Ed25519PublicKey
    key_id: bytes


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse and check a vkey (its key ID must match its name and key)."""
    try:
        name, hex_id, encoded = text.strip().split("+", 2)
        material = strict_b64decode(encoded)
        expected_id = bytes.fromhex(hex_id)
    except ValueError as exc:
        raise VerificationError(f"not a verifier key (name+keyid+base64): {exc}") from exc
    if len(material) != 33 or material[0] not in (ED25519_NOTE, ED25519_COSIGNATURE):
        raise VerificationError("verifier key is not an Ed25519 key")
    if key_id(name, material[0], material[1:]) != expected_id:
        raise VerificationError("verifier key's ID does not match its name and key")
    return VerifierKey(
        name, material[0], Ed25519PublicKey.from_public_bytes(material[1:]), expected_id
    )


@dataclass
class Note:
    """A signed note: its text (ending in a newline) and its signature lines."""

    text: str
    signatures: list[tuple[str, bytes]] = field(default_factory=list)

    def render(self) -> str:
        """The note as served and stored."""
        lines = "".join(
            f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"
            for name, blob in self.signatures
        )
        return f"{self.text}\n{lines}"


def parse_note(raw: str) -> Note:
    """Split a signed note into text and signature lines (tolerant of unknown signers)."""
    text, separator, signature_block = raw.rpartition("\n\n")
    if not separator or not signature_block.endswith("\n"):
        raise VerificationError("not a signed note: no blank line before the signatures")
    note = Note(text + "\n")
    for line in signature_block[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError(f"malformed signature line {line[:40]!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        try:
            blob = strict_b64decode(encoded)
        except ValueError as exc:
            raise VerificationError(f"signature of {name!r} is not base64") from exc
        if not name or len(blob) < 5:
            raise VerificationError(f"malformed signature line {line[:40]!r}")
        note.signatures.append((name, blob))
    return note


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> Note:
    """A note signed by the log's key."""
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    raw = raw_public_key(private_key.public_key())
    signature = key_id(name, ED25519_NOTE, raw) + private_key.sign(text.encode())
    return Note(text, [(name, signature)])


def cosignature_message(text: str, timestamp: int) -> bytes:
    """What a witness signs (tlog-cosignature, Ed25519)."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(note: Note, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> bytes:
    """A witness's cosignature blob: key ID, then timestamp and signature."""
    raw = raw_public_key(private_key.public_key())
    signature = private_key.sign(cosignature_message(note.text, timestamp))
    return key_id(name, ED25519_COSIGNATURE, raw) + struct.pack(">Q", timestamp) + signature


def signature_valid(note: Note, blob: bytes, key: VerifierKey) -> bool:
    """Whether one signature line's blob is ``key``'s valid (co)signature of the note."""
    if blob[:4] != key.key_id:
        return False
    try:
        if key.algorithm == ED25519_NOTE and len(blob) == 68:
            key.public_key.verify(blob[4:], note.text.encode())
            return True
        if key.algorithm == ED25519_COSIGNATURE and len(blob) == 76:
            (timestamp,) = struct.unpack(">Q", blob[4:12])
            key.public_key.verify(blob[12:], cosignature_message(note.text, timestamp))
            return True
    except InvalidSignature:
        return False
    return False


@dataclass(frozen=True)
class Checkpoint:
    """The first three lines of a tlog checkpoint."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        """The note text of this checkpoint."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint's note text (extension lines are ignored)."""
    lines = text.split("\n")
    if len(lines) < 4 or not lines[0]:
        raise VerificationError("a checkpoint has an origin, a size and a root hash line")
    size_line = lines[1]
    if not size_line.isdigit() or (size_line.startswith("0") and size_line != "0"):
        raise VerificationError(f"checkpoint size {size_line!r} is not a decimal number")
    try:
        root = strict_b64decode(lines[2])
    except ValueError as exc:
        raise VerificationError("checkpoint root hash is not base64") from exc
    _check_hashes("checkpoint", root)
    return Checkpoint(lines[0], int(size_line), root)


def open_checkpoint(raw: str, log_key: VerifierKey) -> tuple[Checkpoint, Note]:
    """Parse a signed checkpoint and check the log's signature on it."""
    note = parse_note(raw)
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin != log_key.name:
        raise VerificationError(
            f"checkpoint is for log {checkpoint.origin!r}, not {log_key.name!r}"
        )
    if not any(
        name == log_key.name and signature_valid(note, blob, log_key)
        for name, blob in note.signatures
    ):
        raise VerificationError(
            f"checkpoint of size {checkpoint.size} is not validly signed by {log_key.name}"
        )
    return checkpoint, note


def verify_extends(
    old: Checkpoint, new: Checkpoint, consistency_proof: Callable[[], Sequence[bytes]]
) -> None:
    """Raise VerificationError unless checkpoint ``new`` extends ``old`` (same log, no rewrite).

    ``consistency_proof`` is called, to fetch the proof, only when one is needed.
    """
    if old.origin != new.origin:
        raise VerificationError(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}")
    if new.size < old.size:
        raise VerificationError(f"the log shrank from {old.size} to {new.size} entries")
    if new.size == old.size:
        if new.root != old.root:
            raise VerificationError(f"two different roots for the same size {new.size}")
        return
    if old.size == 0:
        return
    try:
        verify_consistency(old.size, new.size, old.root, new.root, consistency_proof())
    except VerificationError as exc:
        raise VerificationError(f"size {new.size} does not extend size {old.size}: {exc}") from exc


# -- offline bundles ------------------------------------------------------------------------------


@dataclass
class BundleReport:
    """What a verified bundle holds."""

    entries: int
    checkpoints: int
    cosignatures: int
    root: bytes


def verify_bundle(bundle: dict[str, Any], pinned_key: str | None = None) -> BundleReport:
    """Check every entry, checkpoint and (co)signature of an exported bundle."""
    if bundle.get("format") != BUNDLE_FORMAT:
        raise VerificationError(f"not an insitu ledger bundle (format {bundle.get('format')!r})")
    log_key = parse_verifier_key(bundle["log_key"])
    if pinned_key is not None and pinned_key.strip() != bundle["log_key"]:
        raise VerificationError("the bundle's log key is not the key you pinned with --key")
    witnesses = [parse_verifier_key(k) for k in bundle["witness_keys"]]
    if any(w.algorithm != ED25519_COSIGNATURE for w in witnesses):
        raise VerificationError("a witness key is not a cosignature (0x04) key")
    wanted: dict[int, list[tuple[Checkpoint, Note]]] = {}
    for raw in bundle["checkpoints"]:
        checkpoint, note = open_checkpoint(raw, log_key)
        wanted.setdefault(checkpoint.size, []).append((checkpoint, note))
    cosignatures = _check_signature_lines(wanted, log_key, witnesses)
    builder = RootBuilder()
    _check_root(wanted, 0, builder.root())
    for position, entry in enumerate(bundle["entries"]):
        index, recorded_at, event_type, actor, subject, payload = entry
        if index != position:
            raise VerificationError(f"entry at position {position} claims index {index}")
        builder.add(leaf_hash(entry_leaf(index, recorded_at, event_type, actor, subject, payload)))
        _check_root(wanted, builder.size, builder.root())
    beyond = [size for size in wanted if size > builder.size]
    if beyond:
        raise VerificationError(
            f"checkpoint of size {max(beyond)} covers entries the bundle does not hold "
            f"(it has {builder.size}): entries were removed"
        )
    return BundleReport(builder.size, len(bundle["checkpoints"]), cosignatures, builder.root())


def _check_signature_lines(
    wanted: dict[int, list[tuple[Checkpoint, Note]]],
    log_key: VerifierKey,
    witnesses: list[VerifierKey],
) -> int:
    cosignatures = 0
    for pairs in wanted.values():
        for _checkpoint, note in pairs:
            for name, blob in note.signatures:
                if name == log_key.name and signature_valid(note, blob, log_key):
                    continue
                if not any(w.name == name and signature_valid(note, blob, w) for w in witnesses):
                    raise VerificationError(f"signature line of {name!r} does not verify")
                cosignatures += 1
    return cosignatures


def _check_root(wanted: dict[int, list[tuple[Checkpoint, Note]]], size: int, root: bytes) -> None:
    for checkpoint, _note in wanted.get(size, []):
        if checkpoint.root != root:
            raise VerificationError(
                f"signed checkpoint of size {size} does not match entries 0..{size - 1}: "
                "an entry up to there was edited, removed, reordered or inserted"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: verify a bundle file, print a summary, exit 1 on any failure."""
    parser = argparse.ArgumentParser(description="Verify an insitu ledger bundle offline.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--key", help="the log's verifier key, obtained independently (pin it)")
    args = parser.parse_args(argv)
    try:
        bundle = json.loads(args.bundle.read_bytes().decode("utf-8"))
        report = verify_bundle(bundle, args.key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"FAILED: {args.bundle} is not a readable bundle: {exc}", file=sys.stderr)
        return 1
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        f"OK: {report.entries} entries, {report.checkpoints} signed checkpoints, "
        f"{report.cosignatures} witness cosignatures; root "
        f"{base64.b64encode(report.root).decode()}"
    )
    if args.key is None:
        print("note: the log key came from the bundle itself; pin it with --key", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
