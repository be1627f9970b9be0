"""The admin page: accounts and roles, flavors, quotas; admins only, forms with CSRF."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.access import service as access
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.jobs.models import Flavor
from insitu.ledger import service as ledger
from insitu.web.app import create_app
from tests.factories import user_token

PASSWORD = "a long enough secret"


def test_admin_page_and_forms(platform: Platform) -> None:
    admin = {"Authorization": f"Bearer {user_token(platform, 'ada', 'admin')}"}
    researcher = {"Authorization": f"Bearer {user_token(platform, 'rob', 'researcher')}"}
    with TestClient(create_app(platform)) as client:
        assert client.get("/admin", follow_redirects=False).status_code == 303
        refused = client.get("/admin", headers=researcher)
        assert refused.status_code == 403
        assert "for admins" in refused.text
        page = client.get("/admin", headers=admin).text
        assert "rob" in page
        assert "large-gpu" in page
        assert "viewer frames an hour" in page
        assert client.post("/admin/users/rob/role", data={"role": "steward"},
                           headers=researcher).status_code == 403  # fmt: skip
        changed = client.post("/admin/users/rob/role", data={"role": "steward"}, headers=admin,
                              follow_redirects=False)  # fmt: skip
        assert changed.status_code == 303
        flavor = {"cpus": 3, "memory_mb": 8192, "gpus": 0, "max_runtime_s": 600,
                  "scratch_mb": 512}  # fmt: skip
        assert client.post("/admin/flavors/no-gpu", data=flavor, headers=admin,
                           follow_redirects=False).status_code == 303  # fmt: skip
        with session_scope(platform.sessions) as session:
            rob = access.get_user(session, "rob")
            assert rob is not None
            assert rob.role.value == "steward"
            assert session.scalars(select(Flavor.cpus).where(Flavor.name == "no-gpu")).one() == 3
            user = access.get_user(session, "ada")
            assert user is not None
            access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
        client.cookies.clear()  # the browser's way: a session cookie and the form's token
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None
        client.post("/login", data={"name": "ada", "password": PASSWORD,
                                    "csrf_token": token.group(1)})  # fmt: skip
        page = client.get("/admin").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        forged = client.post("/admin/users/rob/role", data={"role": "admin"})
        assert forged.status_code == 403
        done = client.post("/admin/users/rob/role", data={"role": "auditor",
                                                          "csrf_token": csrf.group(1)})  # fmt: skip
        assert done.status_code == 200
    with session_scope(platform.sessions) as session:
        rob = access.get_user(session, "rob")
        assert rob is not None
        assert rob.role.value == "auditor"
