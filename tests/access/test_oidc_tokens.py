"""ID token checks and claim mapping, with tokens made here: forged, alg none, wrong audience."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from insitu.access import oidc
from insitu.access import service as access
from insitu.access.models import ProjectRole, Role
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.settings import Settings
from tests.conftest import make_settings

ISSUER = "https://idp.example/realms/hospital"
PROVIDER_KEY = RSAKey.generate_key(2048, parameters={"kid": "provider"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "provider"})  # same kid, other key


@pytest.fixture
def oidc_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The provider's metadata and keys as this test defines them (no network).
    documents = {
        f"{ISSUER}/.well-known/openid-configuration": {
            "issuer": ISSUER,
            "jwks_uri": f"{ISSUER}/certs",
            "authorization_endpoint": f"{ISSUER}/auth",
            "token_endpoint": f"{ISSUER}/token",
        },
        f"{ISSUER}/certs": {"keys": [PROVIDER_KEY.as_dict(private=False)]},
    }
    monkeypatch.setattr(oidc, "_get_json", documents.__getitem__)
    oidc._cache.clear()
    (tmp_path / "home").mkdir()
    return make_settings(
        tmp_path / "home",
        oidc_issuer=ISSUER,
        oidc_client_id="insitu",
        oidc_role_map="data-steward=steward",
    )


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "insitu",
        "sub": "42",
        "exp": now + 300,
        "iat": now,
        "nonce": "n-1",
        "preferred_username": "Dr.Who",
        "realm_access": {"roles": ["offline_access", "data-steward"]},
        "groups": ["/lab"],
    }
    claims.update(overrides)
    return claims


def _token(claims: dict[str, Any], key: RSAKey = PROVIDER_KEY) -> str:
    return jwt.encode({"alg": "RS256", "kid": "provider"}, claims, key)


def test_a_good_token_maps_roles_and_groups(oidc_settings: Settings) -> None:
    claims = oidc.verify_id_token(oidc_settings, _token(_claims()), "n-1")
    identity = oidc.identity_from_claims(oidc_settings, claims)
    assert identity.role == Role.steward  # through oidc_role_map
    assert identity.groups == ("/lab",)
    assert identity.subject == f"{ISSUER}#42"


@pytest.mark.parametrize(
    ("token_claims", "key", "reason"),
    [
        (_claims(), OTHER_KEY, "signature"),
        (_claims(aud="someone-else"), PROVIDER_KEY, "aud"),
        (_claims(iss="https://evil.example"), PROVIDER_KEY, "iss"),
        (_claims(nonce="replayed"), PROVIDER_KEY, "nonce"),
        (_claims(exp=int(time.time()) - 60), PROVIDER_KEY, "expired"),
    ],
)
def test_forged_or_foreign_tokens_are_refused(
    oidc_settings: Settings, token_claims: dict[str, Any], key: RSAKey, reason: str
) -> None:
    with pytest.raises(oidc.OidcError, match="does not verify"):
        oidc.verify_id_token(oidc_settings, _token(token_claims, key), "n-1")


def test_alg_none_is_refused(oidc_settings: Settings) -> None:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(_claims())}."
    with pytest.raises(oidc.OidcError, match="does not verify"):
        oidc.verify_id_token(oidc_settings, unsigned, "n-1")


def test_state_cookies_are_signed_and_bound_to_their_state(oidc_settings: Settings) -> None:
    url, cookie = oidc.begin(oidc_settings, "https://insitu.example/login/oidc/callback", "/x")
    assert "code_challenge_method=S256" in url
    with pytest.raises(oidc.OidcError, match="not ours"):
        oidc.finish(oidc_settings, cookie[:-2] + "00", "s", "c")
    with pytest.raises(oidc.OidcError, match="state mismatch"):
        oidc.finish(oidc_settings, cookie, "other-state", "c")
    other = make_settings(oidc_settings.home, secret_key="another-secret-" + "y" * 40)
    with pytest.raises(oidc.OidcError, match="not ours"):
        oidc.finish(other, cookie, "s", "c")


def test_roles_are_refreshed_and_projects_follow_groups(platform: Platform) -> None:
    with session_scope(platform.sessions) as session:
        lab = access.create_project(session, "lab", "", ledger.HOST_ACTOR, "/lab")
        user = access.sso_login(session, "iss#7", "Dr.Who", Role.steward, ["/lab"])
        assert user.name == "dr.who"
        assert access.project_role(session, lab, user.id) == ProjectRole.member
    with session_scope(platform.sessions) as session:
        again = access.sso_login(session, "iss#7", "Dr.Who", Role.researcher, [])
        lab_again = access.get_project(session, "lab")
        assert lab_again is not None
        assert again.role == Role.researcher
        assert access.project_role(session, lab_again, again.id) is None
        # A local account with the same name is never taken over: the new user gets another.
        other = access.sso_login(session, "other-iss#7", "dr.who", Role.researcher, [])
        assert other.name == "dr.who-2"
