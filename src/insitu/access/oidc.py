"""OpenID Connect sign-in: authorization code flow with PKCE against an institutional provider.

PKCE and random values come from Authlib, ID-token checks from joserfc. What the flow must
remember between the redirect and the callback (state, nonce, PKCE verifier, where to go next)
travels in a short-lived, HttpOnly cookie signed with the deployment secret, so nothing is
kept on the server and a callback without its own cookie is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from insitu.access.models import Role
from insitu.settings import Settings

STATE_COOKIE = "insitu_oidc"
STATE_LIFETIME_SECONDS = 600
ID_TOKEN_ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA"]  # never "none", never HMAC
_DISCOVERY_TTL = 300.0
_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def _random(length: int) -> str:
    return str(generate_token(length))  # type: ignore[no-untyped-call]  # Authlib is untyped


def _challenge(verifier: str) -> str:
    return str(create_s256_code_challenge(verifier))  # type: ignore[no-untyped-call]


class OidcError(Exception):
    """The sign-in cannot go on; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in."""

    subject: str
    username: str
    role: Role
    groups: tuple[str, ...]


def enabled(settings: Settings) -> bool:
    """Whether OIDC sign-in is configured."""
    return bool(settings.oidc_issuer and settings.oidc_client_id)


def _get_json(url: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, timeout=15)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OidcError(f"the identity provider is unreachable or answered badly: {exc}") from exc
    return document


def discovery(settings: Settings) -> dict[str, Any]:
    """The provider's metadata (cached for a few minutes)."""
    issuer = settings.oidc_issuer.rstrip("/")
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(issuer)
        if cached is not None and now - cached[0] < _DISCOVERY_TTL:
            return cached[1]
    document = _get_json(f"{issuer}/.well-known/openid-configuration")
    if document.get("issuer", "").rstrip("/") != issuer:
        raise OidcError("the provider's metadata names another issuer")
    with _cache_lock:
        _cache[issuer] = (now, document)
    return document


def _sign(settings: Settings, payload: bytes) -> str:
    mac = hmac.new(settings.secret_bytes(), b"oidc-state:" + payload, hashlib.sha256)
    return base64.urlsafe_b64encode(payload).decode() + "." + mac.hexdigest()


def _unsign(settings: Settings, value: str) -> dict[str, Any]:
    encoded, _, mac = value.rpartition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded.encode())
    except ValueError as exc:
        raise OidcError("the sign-in state is damaged: start again") from exc
    expected = hmac.new(settings.secret_bytes(), b"oidc-state:" + payload, hashlib.sha256)
    if not hmac.compare_digest(mac, expected.hexdigest()):
        raise OidcError("the sign-in state is not ours: start again")
    state: dict[str, Any] = json.loads(payload)
    if state.get("expires", 0) < time.time():
        raise OidcError("the sign-in took too long: start again")
    return state


def begin(settings: Settings, redirect_uri: str, next_path: str) -> tuple[str, str]:
    """The provider's authorization URL and the signed state cookie to set."""
    metadata = discovery(settings)
    verifier = _random(64)
    state = {
        "state": _random(32),
        "nonce": _random(32),
        "verifier": verifier,
        "next": next_path,
        "redirect_uri": redirect_uri,
        "expires": int(time.time()) + STATE_LIFETIME_SECONDS,
    }
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.oidc_client_id,
            "redirect_uri": redirect_uri,
            "scope": settings.oidc_scopes,
            "state": state["state"],
            "nonce": state["nonce"],
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    cookie = _sign(settings, json.dumps(state).encode())
    return f"{metadata['authorization_endpoint']}?{query}", cookie


def finish(
    settings: Settings, cookie: str | None, state: str | None, code: str | None
) -> tuple[Identity, str]:
    """Check the callback, redeem the code, verify the ID token; the identity and ``next``."""
    if not cookie:
        raise OidcError("no sign-in in progress in this browser: start again")
    saved = _unsign(settings, cookie)
    if not state or not hmac.compare_digest(state, saved["state"]):
        raise OidcError("the answer does not belong to this sign-in (state mismatch)")
    if not code:
        raise OidcError("the identity provider sent no authorization code")
    metadata = discovery(settings)
    try:
        response = httpx.post(
            metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": saved["redirect_uri"],
                "code_verifier": saved["verifier"],
            },
            auth=(settings.oidc_client_id, settings.oidc_client_secret.get_secret_value()),
            timeout=15,
        )
    except httpx.HTTPError as exc:
        raise OidcError(f"the identity provider is unreachable: {exc}") from exc
    if response.status_code != 200:
        raise OidcError(
            "the identity provider refused the authorization code (used already, or expired)"
        )
    id_token = response.json().get("id_token")
    if not isinstance(id_token, str):
        raise OidcError("the identity provider sent no ID token")
    claims = verify_id_token(settings, id_token, saved["nonce"])
    return identity_from_claims(settings, claims), str(saved["next"])


def verify_id_token(settings: Settings, id_token: str, nonce: str) -> dict[str, Any]:
    """Signature (the provider's published keys), issuer, audience, expiry and nonce."""
    metadata = discovery(settings)
    keys = KeySet.import_key_set(_get_json(metadata["jwks_uri"]))  # type: ignore[arg-type]
    try:
        token = jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": settings.oidc_issuer.rstrip("/")},
            aud={"essential": True, "value": settings.oidc_client_id},
            exp={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise OidcError(f"the ID token does not verify: {exc}") from exc
    return dict(token.claims)


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _role(settings: Settings, values: list[str]) -> Role:
    mapping = {}
    for pair in settings.oidc_role_map.split(","):
        idp_role, _, insitu_role = pair.partition("=")
        if idp_role.strip() and insitu_role.strip():
            mapping[idp_role.strip()] = insitu_role.strip()
    granted = {mapping.get(v, v) for v in values}
    for role in Role:  # the most powerful role the token grants wins
        if role.value in granted:
            return role
    if settings.oidc_default_role:
        return Role(settings.oidc_default_role)
    raise OidcError(
        "your identity provider account has no insitu role: ask an admin to give you one "
        f"(claim {settings.oidc_roles_claim})"
    )


def identity_from_claims(settings: Settings, claims: dict[str, Any]) -> Identity:
    """Map the ID token's claims to an insitu identity (roles and groups as configured)."""
    roles = _claim(claims, settings.oidc_roles_claim) or []
    groups = _claim(claims, settings.oidc_groups_claim) or []
    if not isinstance(roles, list) or not isinstance(groups, list):
        raise OidcError("the roles or groups claim is not a list")
    username = claims.get("preferred_username") or claims["sub"]
    return Identity(
        subject=f"{claims['iss']}#{claims['sub']}",
        username=str(username),
        role=_role(settings, [str(r) for r in roles]),
        groups=tuple(str(g) for g in groups),
    )
