"""The deployment's Ed25519 log key, made by ``insitu init`` and kept in ``$INSITU_HOME``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from insitu.ledger.verifier import VerifierKey, parse_verifier_key, verifier_key
from insitu.settings import Settings

KEY_FILE = "ledger-log.key"


class MissingKeyError(RuntimeError):
    """The log key does not exist yet."""


@dataclass(frozen=True)
class LogSigner:
    """The log's origin (its name) and private key."""

    origin: str
    private_key: Ed25519PrivateKey

    @property
    def verifier_key(self) -> str:
        """The public C2SP vkey that checkpoints verify against."""
        return verifier_key(self.origin, self.private_key.public_key())

    @property
    def parsed_key(self) -> VerifierKey:
        """The vkey, parsed."""
        return parse_verifier_key(self.verifier_key)


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a PEM private key readable by its owner only, atomically."""
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key."""
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"{path} does not hold an Ed25519 private key")
    return key


def ensure_log_key(settings: Settings) -> LogSigner:
    """Create the log key if there is none (``insitu init``), then load it."""
    path = settings.home / KEY_FILE
    if not path.exists():
        write_private_key(path, Ed25519PrivateKey.generate())
    return load_log_signer(settings)


def load_log_signer(settings: Settings) -> LogSigner:
    """The log's signer; fails with a clear message before ``insitu init``."""
    path = settings.home / KEY_FILE
    if not path.exists():
        raise MissingKeyError(f"no ledger key at {path}: run 'insitu init' first")
    return LogSigner(settings.resolved_ledger_origin(), read_private_key(path))
