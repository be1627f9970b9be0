"""The catalogue of event types. Domains register theirs; appending an unknown type fails.

Payloads hold counts, hashes, pseudonymous ids and enumerated values only: never a name, an
e-mail address, a path or patient data. Values are str, int, bool, None, lists and dicts (no
floats: canonical JSON must not depend on float formatting).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventType:
    """One kind of event and what it means."""

    name: str
    description: str


EVENT_TYPES: dict[str, EventType] = {}


def register(name: str, description: str) -> EventType:
    """Add an event type to the catalogue (idempotent for the same description)."""
    existing = EVENT_TYPES.get(name)
    if existing is not None and existing.description != description:
        raise ValueError(f"event type {name!r} is already registered with another meaning")
    event_type = EventType(name, description)
    EVENT_TYPES[name] = event_type
    return event_type


# What exists now. Later domains register theirs (dataset.*, job.*, session.*, release.*) in
# their service module (``register`` at import time).
INGEST_BATCH_STARTED = register("ingest.batch.started", "an ingest batch began")
INGEST_BATCH_FINISHED = register(
    "ingest.batch.finished", "an ingest batch ended: its counts and the hash of its manifest"
)
ACCESS_LOGIN = register(
    "access.login",
    "a person logged in: with a password, or a token's first use in a day",
)
ACCESS_LOGIN_FAILED = register("access.login.failed", "a wrong password for an existing account")
ACCESS_LOCKED = register("access.locked", "an account locked after repeated failed logins")
ACCESS_PASSWORD_SET = register("access.password.set", "an account's password was set")
ACCESS_USER_CREATED = register("access.user.created", "an account was created, with its role")
ACCESS_ROLE_CHANGED = register("access.user.role_changed", "an account's role changed")
ACCESS_USER_DEACTIVATED = register("access.user.deactivated", "an account was deactivated")
ACCESS_TOKEN_CREATED = register("access.token.created", "an API token was issued")
ACCESS_TOKEN_REVOKED = register("access.token.revoked", "an API token was revoked")
PROJECT_CREATED = register("access.project.created", "a project was created")
PROJECT_MEMBER_ADDED = register(
    "access.project.member_added", "a user joined a project (or changed role in it)"
)
PROJECT_MEMBER_REMOVED = register("access.project.member_removed", "a user left a project")
LEDGER_WITNESS_REGISTERED = register("ledger.witness.registered", "a witness key was registered")
