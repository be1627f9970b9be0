"""The release commands against a live server: a reviewer's queue, approve and reject, and the
requester's streamed, hash-checked download."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from insitu.access import service as access
from insitu.cli.main import app
from insitu.db import session_scope
from tests.releases.conftest import Desk
from tests.releases.test_smuggling import HONEST
from tests.servers import live_app

runner = CliRunner()
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _as(desk: Desk, who: access.Principal, monkeypatch: pytest.MonkeyPatch) -> None:
    with session_scope(desk.platform.sessions) as session:
        user = access.get_user(session, who.name)
        assert user is not None
        monkeypatch.setenv("INSITU_TOKEN", access.issue_token(session, user))


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@SQLITE
def test_review_and_download_from_the_command_line(
    desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    approved_id = desk.collect(desk.job(HONEST))
    rejected_id = desk.collect(desk.job({"metrics.json": b'{"auc": 0.8123456}'}))
    with live_app(desk.platform) as url:
        monkeypatch.setenv("INSITU_URL", url)
        _as(desk, desk.sue, monkeypatch)
        code, out, _ = _run("release", "list", "--review", "--json")
        assert code == 0
        assert [r["id"] for r in json.loads(out)] == [approved_id, rejected_id]
        code, out, _ = _run("release", "show", str(approved_id))
        assert "model.joblib" in out
        assert "[in_review]" in out
        code, _, err = _run("release", "reject", str(rejected_id))
        assert code != 0
        assert "--reason" in err
        code, out, _ = _run("release", "reject", str(rejected_id), "--reason", "round to 2 digits")
        assert "[rejected]" in out
        code, out, _ = _run("release", "approve", str(approved_id), "--comment", "fine")
        assert "[approved]" in out
        code, _, err = _run("release", "download", str(approved_id), str(tmp_path / "nope"))
        assert code == 1
        assert "403" in err  # a reviewer never downloads

        _as(desk, desk.rita, monkeypatch)
        code, out, _ = _run("release", "show", str(rejected_id))
        assert "why: round to 2 digits" in out
        code, _, err = _run("release", "download", str(rejected_id), str(tmp_path / "out"))
        assert code == 1
        assert "only approved files" in err
        code, out, err = _run("release", "download", str(approved_id), str(tmp_path / "out"),
                              "--json")  # fmt: skip
        assert code == 0, err
    saved = {Path(e["path"]).name: e["sha256"] for e in json.loads(out)}
    assert saved == {name: hashlib.sha256(data).hexdigest() for name, data in HONEST.items()}
    for name, data in HONEST.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert not list((tmp_path / "out").glob(".*.part"))


def test_a_download_whose_bytes_do_not_match_is_not_kept(tmp_path: Path) -> None:
    import httpx
    from rich.progress import Progress

    from insitu.releases.cli import _fetch

    expected = hashlib.sha256(b"the approved bytes").hexdigest()

    def altered(request: httpx.Request) -> httpx.Response:  # bytes changed on the way
        return httpx.Response(200, content=b"other bytes", headers={"X-Insitu-SHA256": expected})

    client = httpx.Client(transport=httpx.MockTransport(altered), base_url="http://insitu")
    target = tmp_path / "metrics.json"
    with Progress(disable=True) as progress, pytest.raises(typer.Exit):
        _fetch(client, "/releases/1/files/1", None, target, expected, progress,
               progress.add_task("x"))  # fmt: skip
    assert list(tmp_path.iterdir()) == []
