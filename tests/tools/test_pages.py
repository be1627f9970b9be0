"""The tool catalogue pages: sign-in needed, drafts only for those who may see them, the
README rendered safely, the outputs a release is checked against."""

from __future__ import annotations

from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.access.models import Role
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.tools import service as tools
from insitu.tools.environment import build_settings
from insitu.web.app import create_app
from tests.factories import user_token
from tests.tools.bundles import oci_bundle


def test_catalogue_pages(platform: Platform) -> None:
    with session_scope(platform.sessions) as session:
        mia = access.create_user(session, "mia", Role.maintainer)
        principal = access.Principal(mia.id, "mia", Role.maintainer)
        tools.publish(session, platform.store, build_settings(platform.settings),
                      oci_bundle("summary"), principal)  # fmt: skip
    maintainer = {"Authorization": f"Bearer {user_token(platform, 'mia2', 'maintainer')}"}
    with session_scope(platform.sessions) as session:
        user = access.get_user(session, "mia")
        assert user is not None
        own = {"Authorization": f"Bearer {access.issue_token(session, user)}"}
    with TestClient(create_app(platform)) as client:
        assert client.get("/tools", follow_redirects=False).headers["location"] == (
            "/login?next=/tools"
        )
        listed = client.get("/tools", headers=own).text
        assert "summary@1.0.0" in listed
        page = client.get("/tools/summary", headers=own)
        assert page.status_code == 200
        assert "<h2>An image</h2>" in page.text  # the README, rendered one level down
        assert "<code>summary.csv</code>" in page.text
        assert "summary@1.0.0" not in client.get("/tools", headers=maintainer).text  # a draft
        assert client.get("/tools/summary", headers=maintainer).status_code == 404
        assert client.get("/tools/nothing", headers=own).status_code == 404
