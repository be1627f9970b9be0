"""The ``insitu`` command: host commands on $INSITU_HOME, client commands against a live server."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from insitu.cli.main import app
from insitu.core.platform import open_platform
from insitu.ingest.corpus import generate_corpus
from insitu.settings import InsecureSettingsError, load_settings
from tests.factories import write
from tests.servers import free_port, live_app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INSITU_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_init_prints_the_admin_token_once(home: Path) -> None:
    code, out, _ = _invoke("init", "--json")
    assert code == 0
    first = json.loads(out)
    assert first["token"].startswith("insitu_")
    assert oct((home / "settings.env").stat().st_mode)[-3:] == "600"
    code, out, _ = _invoke("init", "--json")
    assert code == 0
    assert json.loads(out)["token"] is None
    assert first["token"] not in (home / "insitu.db").read_bytes().decode("latin-1")


def test_user_add_and_its_errors(home: Path) -> None:
    _invoke("init")
    code, out, _ = _invoke("user", "add", "bea", "--role", "steward", "--json")
    assert code == 0
    assert json.loads(out)["role"] == "steward"
    code, out, err = _invoke("user", "add", "bea", "--role", "steward")
    assert code == 1
    assert out == ""
    assert err.strip() == "insitu: error: user 'bea' already exists"
    code, _, err = _invoke("user", "add", "cid", "--role", "emperor")
    assert code == 1
    assert "is not one of" in err


def test_host_commands_need_an_initialised_home(home: Path) -> None:
    code, _, err = _invoke("ingest", str(home))
    assert code == 1
    assert "run `insitu init` first" in err


def test_default_secrets_are_refused_outside_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSITU_HOME", str(tmp_path))
    with pytest.raises(InsecureSettingsError, match="built-in default"):
        open_platform(load_settings())
    monkeypatch.setenv("INSITU_SECRET_KEY", "short")
    with pytest.raises(InsecureSettingsError, match="shorter than 32"):
        open_platform(load_settings())
    demo = open_platform(load_settings(demo=True, secret_key="insecure-default-secret-change-me"))
    demo.close()


def test_ingest_exit_status_counts_failures_and_json_is_one_document(
    home: Path, tmp_path: Path
) -> None:
    _invoke("init")
    corpus = generate_corpus(
        tmp_path / "export", subjects=1, ct_slices=2, mr_slices=1, rows=16, columns=16
    )
    write(corpus.root / "junk1.txt", b"junk")
    write(corpus.root / "junk2.txt", b"junk")
    code, out, err = _invoke(
        "ingest", str(corpus.root), "--site", "SITE-D", "--workers", "1", "--json"
    )
    assert code == 2
    report = json.loads(out)
    assert report["counts"]["ingested"] == 3
    assert report["counts"]["failed"] == 2
    assert {Path(f["path"]).name for f in report["failures_with_paths"]} == {
        "junk1.txt",
        "junk2.txt",
    }
    code, out, err = _invoke("ingest", str(corpus.files[0]), "--site", "SITE-D", "--workers", "1")
    assert code == 0
    assert "ingest batch" in err
    assert "duplicates" in err
    code, _, err = _invoke("ingest", str(corpus.root), "--options", "retain-everything")
    assert code == 1
    assert "unknown de-identification option" in err


def test_ingest_clinical_needs_a_mapping(home: Path, tmp_path: Path) -> None:
    _invoke("init")
    clinical = write(tmp_path / "c.csv", b"patient_id,age\nP1,50\n")
    code, _, err = _invoke("ingest", "--clinical", str(clinical))
    assert code == 1
    assert "--clinical-map" in err
    mapping = write(tmp_path / "m.toml", b"columns = {}\n")
    code, _, err = _invoke("ingest", "--clinical", str(clinical), "--clinical-map", str(mapping))
    assert code == 1
    assert "field 'key'" in err


@pytest.fixture
def live_server(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    _code, out, _ = _invoke("init", "--json")
    admin = json.loads(out)["token"]
    tokens = {"admin": admin}
    for name, role in (("stew", "steward"), ("res", "researcher")):
        tokens[name] = json.loads(_invoke("user", "add", name, "--role", role, "--json")[1])[
            "token"
        ]
    platform = open_platform(load_settings())
    with live_app(platform) as url:
        monkeypatch.setenv("INSITU_URL", url)
        yield tokens
    platform.close()


def test_client_commands_against_a_live_server(
    live_server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = generate_corpus(
        tmp_path / "export",
        subjects=2,
        ct_slices=2,
        mr_slices=1,
        rows=16,
        columns=16,
        ultrasound=True,
    )
    assert _invoke("ingest", str(corpus.root), "--workers", "1")[0] == 0
    code, _, err = _invoke("catalog", "search")
    assert code == 1
    assert "401" in err
    assert "login required" in err
    monkeypatch.setenv("INSITU_TOKEN", live_server["res"])
    code, _, err = _invoke("catalog", "search", "--json")
    assert code == 1
    assert "403" in err
    assert "steward" in err
    code, out, _ = _invoke("whoami", "--json")
    assert json.loads(out) == {"name": "res", "role": "researcher"}
    monkeypatch.setenv("INSITU_TOKEN", live_server["stew"])
    code, out, _ = _invoke("catalog", "search", "--modality", "CT", "--json")
    assert code == 0
    found = json.loads(out)
    assert found["total"] == 2
    assert {i["modality"] for i in found["items"]} == {"CT"}
    code, out, _ = _invoke("quarantine", "list", "--json")
    assert code == 0
    assert len(json.loads(out)["items"]) == 2


def test_client_commands_explain_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSITU_URL", f"http://127.0.0.1:{free_port()}")
    code, out, err = _invoke("catalog", "search")
    assert code == 1
    assert out == ""
    assert "cannot reach the insitu server" in err


def test_help_lists_the_contract_commands() -> None:
    _code, out, _ = _invoke("--help")
    for command in ("init", "serve", "demo", "user", "ingest", "dicom", "catalog", "whoami"):
        assert command in out


def test_dicom_listen_refuses_bad_ae_titles_and_an_empty_allow_list(home: Path) -> None:
    _invoke("init")
    code, _, err = _invoke(
        "dicom", "listen", "--ae-title", "WAY_TOO_LONG_AE_TITLE", "--calling-ae", "PACS"
    )
    assert code != 0
    assert "--ae-title" in err
    assert "1 to 16 characters" in err
    code, _, err = _invoke("dicom", "listen", "--calling-ae", "BAD\\AE")
    assert code != 0
    assert "calling AE title" in err
    code, _, err = _invoke("dicom", "listen")
    assert code != 0
    assert "--calling-ae" in err


def test_login_and_token_commands_against_a_live_server(live_server: dict[str, str]) -> None:
    code, _, err = _invoke("user", "set-password", "res", "--password", "short")
    assert code == 1
    assert "at least 12" in err
    assert _invoke("user", "set-password", "res", "--password", "a long enough secret")[0] == 0
    result = runner.invoke(app, ["login", "--name", "res"], input="not the password\n")
    assert result.exit_code == 1
    assert "wrong account name or password" in result.stderr
    result = runner.invoke(app, ["login", "--name", "res"], input="a long enough secret\n")
    assert result.exit_code == 0, result.stderr
    assert "as res (researcher)" in result.stdout
    code, out, _ = _invoke("whoami", "--json")
    assert json.loads(out)["name"] == "res"
    code, out, _ = _invoke("token", "create", "--label", "job", "--expires-days", "3", "--json")
    assert code == 0
    created = json.loads(out)
    tokens = json.loads(_invoke("token", "list", "--json")[1])
    assert {t["label"] for t in tokens} >= {"job", "cli", "initial"}
    job = next(t for t in tokens if t["label"] == "job")
    assert _invoke("token", "revoke", str(job["id"]))[0] == 0
    result = runner.invoke(app, ["login", "--token"], input=created["token"] + "\n")
    assert result.exit_code == 1  # revoked just above
    result = runner.invoke(app, ["login", "--token"], input=live_server["stew"] + "\n")
    assert result.exit_code == 0
    assert "as stew (steward)" in result.stdout


def test_project_commands_against_a_live_server(
    live_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSITU_TOKEN", live_server["admin"])
    code, out, _ = _invoke("project", "create", "lab-1", "--title", "A lab", "--json")
    assert code == 0
    assert json.loads(out)["name"] == "lab-1"
    assert _invoke("project", "add-member", "lab-1", "res", "--lead")[0] == 0
    code, out, _ = _invoke("project", "show", "lab-1")
    assert "res (lead)" in out
    monkeypatch.setenv("INSITU_TOKEN", live_server["stew"])
    code, _, err = _invoke("project", "show", "lab-1")
    assert code == 1
    assert "403" in err
    code, out, _ = _invoke("project", "list", "--json")
    assert json.loads(out) == []


def test_audit_access_log_command(
    live_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSITU_TOKEN", live_server["admin"])
    code, out, _ = _invoke("audit", "access-log", "--json")
    assert code == 0
    names = {e["subject_name"] for e in json.loads(out)}
    assert {"admin", "stew", "res"} <= names
    monkeypatch.setenv("INSITU_TOKEN", live_server["res"])
    code, _, err = _invoke("audit", "access-log")
    assert code == 1
    assert "403" in err


def test_dataset_commands_against_a_live_server(
    live_server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = generate_corpus(
        tmp_path / "export", subjects=2, ct_slices=2, mr_slices=1, rows=16, columns=16
    )
    assert _invoke("ingest", str(corpus.root), "--workers", "1")[0] == 0
    monkeypatch.setenv("INSITU_TOKEN", live_server["stew"])
    code, out, err = _invoke(
        "dataset",
        "create",
        "ct",
        "--title",
        "CT",
        "--modality",
        "CT",
        "--synthetic",
        "--terms",
        "No re-identification.",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["state"] == "draft"
    code, out, _ = _invoke("dataset", "edit", "ct", "--title", "CT, renamed")
    assert "CT, renamed" in out
    assert "admin now stewards ct" in _invoke("dataset", "add-steward", "ct", "admin")[1]
    code, out, _ = _invoke("dataset", "release", "ct")
    assert code == 0
    assert "[released]" in out
    assert "content sha256" in out
    code, out, _ = _invoke("dataset", "verify", "ct")  # host command: re-reads every blob
    assert code == 0
    assert "OK: ct v1, 4 instances re-read and re-hashed" in out
    code, out, err = _invoke("dataset", "view", "ct")  # host command: builds the job view
    assert code == 0, err
    view = Path(out.strip())
    manifest = (view / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 5
    assert view.name == "ct-v1"
    assert "granted ct to res" in _invoke("dataset", "grant", "ct", "res")[1]
    monkeypatch.setenv("INSITU_TOKEN", live_server["res"])
    code, out, _ = _invoke("dataset", "accept-terms", "ct")
    assert "No re-identification." in out
    code, out, _ = _invoke("dataset", "list", "--json")
    assert [d["name"] for d in json.loads(out)] == ["ct"]
    code, _, err = _invoke("dataset", "release", "ct")
    assert code == 1
    assert "403" in err
    monkeypatch.setenv("INSITU_TOKEN", live_server["stew"])
    assert "revoked 1 grant(s)" in _invoke("dataset", "revoke", "ct", "res")[1]
    assert _invoke("dataset", "publish", "ct")[0] == 0
    assert "PID ct.v1 (registered)" in _invoke("dataset", "show", "ct")[1]
    withdrawn = manifest[1].split(",")[1]
    code, out, err = _invoke("dataset", "withdraw-subject", withdrawn, "--yes")
    assert code == 0, err
    assert "subject withdrawn: 3 instances, 3 blobs deleted" in out
    assert "new version: ct v2" in out
    assert not view.exists()
    # A blob changed behind insitu's back: verify marks v2 corrupted and drops its view.
    code, out, _ = _invoke("dataset", "view", "ct")
    view2 = Path(out.strip())
    victim = next(view2.rglob("*.dcm"))
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes() + b"tampered")
    code, out, _ = _invoke("dataset", "verify", "ct")
    assert code == 1
    assert "CORRUPTED" in out
    assert not view2.exists()
    monkeypatch.setenv("INSITU_TOKEN", live_server["admin"])
    assert "request 1" in _invoke("dataset", "request", "ct", "--purpose", "QA")[1]
    monkeypatch.setenv("INSITU_TOKEN", live_server["stew"])
    code, out, _ = _invoke("dataset", "requests", "ct")
    assert "pending   admin" in out
    assert "refused" in _invoke("dataset", "refuse", "ct", "1", "--reason", "no need")[1]
    code, out, _ = _invoke("dataset", "invalidate", "ct", "--reason", "test over")
    assert "invalidated: test over" in out
    code, _, err = _invoke("dataset", "edit", "ct", "--title", "too late")
    assert code == 1
    assert "409" in err


@pytest.fixture
def job_roots() -> Iterator[Path]:
    """Where the demo's test runs keep views, tools, jobs and homes: reachable for the job
    user the sandboxes start as (pytest's own temp folders are private to root)."""
    shared = Path(tempfile.mkdtemp(prefix="insitu-demo-", dir="/var/tmp"))
    shared.chmod(0o711)
    yield shared
    for path in [shared, *shared.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(shared, ignore_errors=True)


def test_demo_prepares_accounts_a_released_dataset_and_a_checkpoint(
    home: Path, monkeypatch: pytest.MonkeyPatch, job_roots: Path
) -> None:
    from insitu.access import service as access
    from insitu.cli.main import prepare_demo
    from insitu.datasets import service as datasets
    from insitu.db import session_scope
    from insitu.ledger import service as ledger
    from insitu.ledger.keys import load_log_signer
    from insitu.tools import service as tools

    wheelhouse = Path(__file__).resolve().parents[2] / ".wheelhouse"  # make test downloads it
    roots = {f"{name}_root": job_roots / name for name in ("views", "tools", "jobs", "homes")}
    settings = load_settings(demo=True, tool_wheel_dir=wheelhouse, **roots)
    platform, info = prepare_demo(settings, subjects=2)  # two: the classifier needs both sexes
    try:
        accounts = info["accounts"]
        assert isinstance(accounts, dict)
        assert set(accounts) == {"admin", "steward", "researcher", "auditor", "maintainer"}
        assert accounts["steward"]["password"] == "insitu-demo-steward"
        with session_scope(platform.sessions) as session:
            dataset = datasets.get_dataset(session, "demo-sample")
            assert dataset is not None
            assert dataset.state.value == "published"
            researcher = access.get_user(session, "researcher")
            assert researcher is not None
            decision = datasets.can_use_dataset(session, researcher.id, dataset)
            assert decision.allowed  # granted, and the terms accepted before the sample job
            report = ledger.verify(session, load_log_signer(settings).parsed_key)
            assert report.ok, report.problems
            assert info["job"] is not None  # the sample job, queued for the scheduler
            for name in ("dataset-summary", "radiomics-classifier"):
                version = tools.get_version(session, name)
                assert version is not None, name
                assert version.state.value == "verified"
            # The test runs' results left as releases, at once: synthetic data, every check passed.
            from insitu.releases.models import ReleaseRequest

            made = session.query(ReleaseRequest).order_by(ReleaseRequest.id).all()
            assert [(r.state.value, r.policy) for r in made] == [("approved", "automatic")] * 2
    finally:
        platform.close()
    again, _ = prepare_demo(load_settings(demo=True), subjects=2)  # re-running is safe
    again.close()


def test_tool_commands_against_a_live_server(
    live_server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.tools.bundles import IMAGE, manifest_text

    mia = json.loads(_invoke("user", "add", "mia", "--role", "maintainer", "--json")[1])["token"]
    bundles = {}
    for version in ("1.0.0", "2.0.0"):
        folder = tmp_path / f"image-{version}"
        folder.mkdir()
        runtime = f'type = "oci"\nimage = "{IMAGE}"'
        (folder / "insitu-tool.toml").write_text(manifest_text("summary", version, runtime))
        (folder / "README.md").write_text("# Summary\n")
        bundles[version] = str(folder)
    monkeypatch.setenv("INSITU_TOKEN", live_server["res"])
    code, _, err = _invoke("tool", "publish", bundles["1.0.0"])
    assert code == 1
    assert "403" in err
    monkeypatch.setenv("INSITU_TOKEN", mia)
    code, out, err = _invoke("tool", "publish", bundles["1.0.0"])
    assert code == 0, err
    assert "summary@1.0.0  [draft]" in out
    assert "next: insitu tool submit summary@1.0.0" in out
    assert _invoke("tool", "publish", bundles["2.0.0"])[0] == 0
    code, _, err = _invoke("tool", "publish", bundles["2.0.0"])
    assert code == 1
    assert "409" in err
    assert "[in_review]" in _invoke("tool", "submit", "summary@1.0.0")[1]
    code, _, err = _invoke("tool", "verify", "summary@1.0.0")
    assert code == 1
    assert "403" in err
    monkeypatch.setenv("INSITU_TOKEN", live_server["stew"])
    code, _, err = _invoke("tool", "verify", "summary@1.0.0")
    assert code == 1
    assert "no passing test run" in err
    from tests.tools.bundles import record_passing_run

    recorded = open_platform(load_settings())
    record_passing_run(recorded, "summary", "1.0.0")
    recorded.close()
    assert "[verified]" in _invoke("tool", "verify", "summary@1.0.0", "--note", "ok")[1]
    code, out, _ = _invoke("tool", "show", "summary")
    assert "summary@1.0.0  [verified]" in out
    assert "used by 1 job(s)" in out  # its test run
    assert "maintainer mia; license Apache-2.0" in out
    assert "writes /results/summary.csv (text/csv)" in out
    code, out, _ = _invoke(
        "tool", "deprecate", "summary@1.0.0", "--reason", "old", "--successor", "summary@2.0.0"
    )
    assert "[deprecated]" in out
    monkeypatch.setenv("INSITU_TOKEN", live_server["res"])
    code, out, _ = _invoke("tool", "list", "--json")
    assert [(t["version"], t["state"]) for t in json.loads(out)] == [("1.0.0", "deprecated")]
    assert "use summary@2.0.0" in _invoke("tool", "show", "summary@1.0.0")[1]


def test_job_commands_explain_problems(
    live_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSITU_TOKEN", live_server["res"])
    code, _, err = _invoke(
        "job", "submit", "--tool", "nothing", "--dataset", "none", "--", "python3", "~/x.py"
    )
    assert code == 1
    assert "the tool 'nothing' names no version" in err
    assert "fix: give it as NAME@VERSION" in err
    assert "'~' is not expanded" in err
    assert "nothing was queued" in err
    code, out, _ = _invoke("job", "list", "--json")
    assert (code, json.loads(out)) == (0, [])
    assert "small-gpu" in _invoke("job", "flavors")[1]
    code, _, err = _invoke("job", "set-flavor", "tiny", "--cpus", "1", "--memory-mb", "512",
                           "--max-runtime-h", "1")  # fmt: skip
    assert code == 1
    assert "403" in err
    monkeypatch.setenv("INSITU_TOKEN", live_server["admin"])
    code, out, err = _invoke("job", "set-flavor", "tiny", "--cpus", "1", "--memory-mb", "512",
                             "--max-runtime-h", "0.5", "--backend", "slurm")  # fmt: skip
    assert (code, out.strip()) == (0, "flavor tiny set"), err
    assert "tiny" in _invoke("job", "flavors")[1]
    code, _, err = _invoke("job", "set-flavor", "bad", "--cpus", "1", "--memory-mb", "512",
                           "--max-runtime-h", "1", "--backend", "mesos")  # fmt: skip
    assert "backend 'mesos' is unknown" in err
    monkeypatch.setenv("INSITU_TOKEN", live_server["res"])
    code, _, err = _invoke("job", "show", "999")
    assert code == 1
    assert "403" in err
    monkeypatch.delenv("INSITU_TOKEN")
    code, _, err = _invoke("job", "list")
    assert code == 1
    assert "401" in err


def test_ingest_with_a_bad_allow_list_extension_fails_in_one_line(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _invoke("init", "--json")[0] == 0
    extra = tmp_path / "extra.toml"
    extra.write_text('[attributes]\nRows = { rule = "terms", why = "x" }\n')
    monkeypatch.setenv("INSITU_DEID_ALLOW_LIST_EXTRA", str(extra))
    (tmp_path / "in").mkdir()
    code, _out, err = _invoke("ingest", str(tmp_path / "in"))
    assert code == 1
    assert str(extra) in err
    assert "cannot use rule terms" in err
    assert "INSITU_DEID_ALLOW_LIST_EXTRA" in err
