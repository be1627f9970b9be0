"""Keyed pseudonyms: the same input gives the same output on every upload, per deployment.

All values are HMAC-SHA256 under the deployment secret with a domain label, so a pseudonym of
one kind can never collide with, or be computed from, another kind.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

DATE_SHIFT_MAX_DAYS = 3650


@dataclass(frozen=True)
class Pseudonymizer:
    """Computes every pseudonym from one secret."""

    secret: bytes

    def _mac(self, label: str, *parts: str) -> bytes:
        message = "\x1f".join((label, *parts)).encode("utf-8", "surrogateescape")
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def subject(self, site: str, patient_id: str) -> str:
        """The subject pseudonym for an original Patient ID at a site."""
        digest = self._mac("subject", site, patient_id)
        return "S-" + base64.b32encode(digest[:10]).decode().rstrip("=")

    def uid(self, original: str) -> str:
        """A ``2.25.<int>`` UID for an original UID (64 characters at most)."""
        digest = self._mac("uid", original.strip().rstrip("\x00"))
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    def date_shift(self, site: str, patient_id: str) -> dt.timedelta:
        """The secret whole-day shift (1 to 10 years back) applied to a subject's dates."""
        digest = self._mac("date-shift", site, patient_id)
        days = 1 + int.from_bytes(digest[:4], "big") % DATE_SHIFT_MAX_DAYS
        return dt.timedelta(days=-days)

    def path(self, path: str) -> str:
        """An HMAC of a source path: errors can be matched to files without storing names."""
        return self._mac("path", path).hex()[:32]
