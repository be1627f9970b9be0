"""Job logs are a way out of the platform, so what their owner sees is narrow: the last 1 MB,
with long base64 or hex runs, DICOM UIDs and subject pseudonyms redacted. Admins see the whole
log. Every view is a ledger event. Exit codes and run times remain covert channels (docs)."""

from __future__ import annotations

import re

OWNER_LIMIT = 1024 * 1024
_ENCODED = re.compile(r"[A-Za-z0-9+/=_-]{257,}")
_HEX = re.compile(r"[0-9A-Fa-f]{257,}")
_UID = re.compile(r"\b[0-2](?:\.(?:0|[1-9][0-9]*)){3,}\b")
_PSEUDONYM = re.compile(r"\bS-[A-Z2-7]{16}\b")


def redact(data: bytes, whole: bool = False) -> str:
    """The log as its owner (or, ``whole``, an admin) may read it."""
    if whole:
        return data.decode("utf-8", "replace")
    cut = len(data) > OWNER_LIMIT
    text = data[-OWNER_LIMIT:].decode("utf-8", "replace")
    text = _HEX.sub("[redacted: long hex]", text)
    text = _ENCODED.sub("[redacted: long encoded run]", text)
    text = _UID.sub("[redacted: UID]", text)
    text = _PSEUDONYM.sub("[redacted: pseudonym]", text)
    if cut:
        text = f"[only the last {OWNER_LIMIT // 1024} KiB are shown]\n" + text
    return text
