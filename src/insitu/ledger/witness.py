"""A witness: what a partner hospital runs to keep the platform's ledger honest.

Each run fetches the latest signed checkpoint, checks the log's signature, checks with a
consistency proof that it extends the last checkpoint this witness saw, keeps it, cosigns it
(C2SP tlog-cosignature) and sends the cosignature back. A log that shows this witness two
histories (a fork, or a rollback) fails the check; the evidence is kept in the state folder.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from insitu.ledger import verifier
from insitu.ledger.keys import read_private_key, write_private_key
from insitu.ledger.verifier import Checkpoint, VerificationError

KEY_FILE = "witness.key"
LOG_KEY_FILE = "log.vkey"
CHECKPOINT_FILE = "checkpoint"


class ForkDetectedError(Exception):
    """The log showed a history that does not extend the one this witness saw before."""


class WitnessError(Exception):
    """The witness could not do its job (unreachable log, bad answer, refused cosignature)."""


@dataclass
class WitnessResult:
    """What one run did."""

    previous_size: int | None
    size: int
    accepted: bool
    message: str


@dataclass
class WitnessState:
    """The witness's folder: its key, the log key it trusts and the last checkpoint it saw."""

    folder: Path
    name: str

    def key(self) -> Ed25519PrivateKey:
        """The witness's private key, created on first use."""
        path = self.folder / KEY_FILE
        if not path.exists():
            write_private_key(path, Ed25519PrivateKey.generate())
        return read_private_key(path)

    def verifier_key(self) -> str:
        """The vkey the platform's admin registers (``insitu ledger add-witness``)."""
        return verifier.verifier_key(
            self.name, self.key().public_key(), verifier.ED25519_COSIGNATURE
        )

    def _write(self, name: str, text: str) -> None:
        path = self.folder / name
        temporary = path.with_name(name + ".tmp")
        temporary.write_text(text)
        temporary.replace(path)

    def read(self, name: str) -> str | None:
        """A state file's text, if it exists."""
        path = self.folder / name
        return path.read_text() if path.exists() else None

    def keep_checkpoint(self, note: str) -> None:
        """Remember the newest verified checkpoint."""
        self._write(CHECKPOINT_FILE, note)

    def keep_log_key(self, key: str) -> None:
        """Trust this log key from now on."""
        self._write(LOG_KEY_FILE, key.strip() + "\n")

    def keep_evidence(self, old: str, new: str, reason: str) -> Path:
        """Write both checkpoints and the reason, for the partners and the auditors."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.folder / f"fork-evidence-{stamp}.txt"
        path.write_text(
            f"{reason}\n\n--- checkpoint seen before ---\n{old}\n--- checkpoint now ---\n{new}"
        )
        return path


def _get(client: httpx.Client, url: str, **params: int) -> httpx.Response:
    try:
        response = client.get(url, params=params)
    except httpx.HTTPError as exc:
        raise WitnessError(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        raise WitnessError(f"{url} answered {response.status_code}: {response.text[:200]}")
    return response


def witness_once(
    base_url: str,
    state: WitnessState,
    log_key: str | None = None,
    client: httpx.Client | None = None,
) -> WitnessResult:
    """One witnessing round against the platform at ``base_url``."""
    api = base_url.rstrip("/") + "/api/v1/ledger"
    own_client = client is None
    http = client or httpx.Client(timeout=30)
    try:
        trusted = log_key or state.read(LOG_KEY_FILE)
        if trusted is None:  # trust on first use, as SSH does; pin with --log-key instead
            trusted = _get(http, f"{api}/key").text
        key = verifier.parse_verifier_key(trusted)
        state.keep_log_key(trusted)
        raw = _get(http, f"{api}/checkpoint").text
        try:
            checkpoint, note = verifier.open_checkpoint(raw, key)
        except VerificationError as exc:
            raise WitnessError(f"the log's checkpoint does not verify: {exc}") from exc
        previous_raw = state.read(CHECKPOINT_FILE)
        previous_size = None
        if previous_raw is not None:
            previous, _ = verifier.open_checkpoint(previous_raw, key)
            previous_size = previous.size
            _check_extends(http, api, state, previous, checkpoint, previous_raw, raw)
        state.keep_checkpoint(raw)
        note.signatures = [
            (state.name, verifier.cosign(note, state.name, state.key(), int(time.time())))
        ]
        response = http.post(
            f"{api}/cosignatures",
            content=note.render().encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        accepted = response.status_code == 200
        message = (
            f"cosigned size {checkpoint.size}"
            if accepted
            else f"the log refused the cosignature ({response.status_code}: "
            f"{response.text[:200]}); register this witness with: "
            f"insitu ledger add-witness '{state.verifier_key()}'"
        )
        return WitnessResult(previous_size, checkpoint.size, accepted, message)
    finally:
        if own_client:
            http.close()


def _check_extends(
    http: httpx.Client,
    api: str,
    state: WitnessState,
    previous: Checkpoint,
    current: Checkpoint,
    previous_raw: str,
    current_raw: str,
) -> None:
    def fetch_proof() -> list[bytes]:
        answer = _get(http, f"{api}/proof/consistency", old=previous.size, new=current.size)
        return [base64.b64decode(p) for p in answer.json()["proof"]]

    try:
        verifier.verify_extends(previous, current, fetch_proof)
    except VerificationError as exc:
        evidence = state.keep_evidence(previous_raw, current_raw, str(exc))
        raise ForkDetectedError(f"FORK DETECTED: {exc}; evidence in {evidence}") from exc
