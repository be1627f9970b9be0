"""Typical wrong submissions, each caught by preflight with what to do instead."""

from __future__ import annotations

import pytest

from insitu.db import session_scope
from insitu.jobs import service as jobs
from tests.jobs.conftest import Site, needs_sandbox

pytestmark = needs_sandbox
GOOD = {"tool_ref": "hello@1.0.0", "dataset_names": ["lung"], "flavor": "no-gpu"}

# (what the user got wrong, submission changes, expected problem code, words of the fix)
WRONG = [
    ("a tool with no version", {"tool_ref": "hello"}, "tool_reference", "NAME@VERSION"),
    ("a tool that does not exist", {"tool_ref": "hello@9.9.9"}, "tool_unknown", "tool list"),
    ("an unverified tool on real data", {"tool_ref": "hello@2.0.0"}, "tool_not_runnable",
     "verified version"),
    ("a missing dataset", {"dataset_names": ["lungs"]}, "dataset_unknown", "dataset list"),
    ("no dataset at all", {"dataset_names": []}, "no_dataset", "--dataset"),
    ("a dataset with no grant", {"dataset_names": ["nogrant"]}, "dataset_unknown", "request"),
    ("terms not accepted", {"dataset_names": ["noterms"]}, "dataset_unusable", "accept-terms"),
    ("a draft dataset", {"dataset_names": ["draft-ds"]}, "dataset_unusable", "release"),
    ("an unknown flavor", {"flavor": "gpu"}, "flavor_unknown", "no-gpu, small-gpu"),
    ("a GPU tool on the no-gpu flavor", {"tool_ref": "hello@3.0.0"}, "flavor_no_gpu",
     "small-gpu"),
    ("a wrong dataset path", {"command": ["python3", "/data/lung/manifest.csv"]},
     "path_dataset_not_given", "/data/lung-v1"),
    ("a dataset not given to the job", {"command": ["ls", "/data/sample-v1"]},
     "path_dataset_not_given", "--dataset sample"),
    ("a write into /data", {"command": ["run", "--output", "/data/lung-v1/out"]},
     "write_to_data", "/results"),
    ("a shell redirection into /data", {"command": ["sh", "-c", "ls > /data/lung-v1/x"]},
     "write_to_data", "/results"),
    ("a host path", {"command": ["python3", "/home/rita/../../etc/passwd"]}, "path_host",
     "README.txt"),
    ("a path on a laptop", {"command": ["python3", "C:\\\\data\\\\x.py"]}, "path_windows",
     "/data"),
    ("a tilde", {"command": ["python3", "~/train.py"]}, "path_tilde", "/home/rita/train.py"),
    ("another user's home", {"command": ["python3", "/home/stan/x.py"]}, "path_other_home",
     "/home/rita"),
    ("an empty command", {"command": []}, "tool_default_or_empty", ""),
    ("a smoke run of no subjects", {"sample": 0}, "sample_size", "1 or more"),
    ("a project that is not yours", {"project": "nolab"}, "project_unknown", "--project"),
    ("an image tool on a bundle backend", {"tool_ref": "img@1.0.0"}, "backend_no_images",
     "kubernetes"),
]  # fmt: skip


def _submit(site: Site, **changes: object) -> jobs.Submission:
    values: dict[str, object] = {
        **GOOD,
        "command": ["python3", "/opt/tool/app/main.py"],
        "dry_run": True,
    }
    values.update(changes)
    with session_scope(site.platform.sessions) as session:
        submission = jobs.submit(
            session,
            site.platform.settings,
            site.rita,
            **values,  # type: ignore[arg-type]
        )
        session.expunge_all()
        return submission


def test_a_good_submission_passes(site: Site) -> None:
    result = _submit(site).preflight
    assert result.ok, result.problems
    assert result.warnings == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # logic: one engine
@pytest.mark.parametrize(("what", "changes", "code", "fix"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_submissions_are_caught_with_a_fix(
    site: Site, what: str, changes: dict[str, object], code: str, fix: str
) -> None:
    if code == "tool_default_or_empty":
        # An empty command runs the tool's default command: no problem, and it is checked.
        result = _submit(site, **changes).preflight
        assert result.ok, result.problems
        return
    result = _submit(site, **changes).preflight
    assert not result.ok, what
    codes = {p.code: p for p in result.problems}
    assert code in codes, (what, result.problems)
    assert fix in codes[code].fix or fix in codes[code].message, codes[code]


def test_results_outside_results_are_a_warning(site: Site) -> None:
    result = _submit(site, command=["train", "--out", "/home/rita/model"]).preflight
    assert result.ok
    assert [w.code for w in result.warnings] == ["output_outside_results"]


def test_the_quota_of_concurrent_jobs(site: Site) -> None:
    settings = site.platform.settings
    with session_scope(site.platform.sessions) as session:
        for _ in range(settings.job_max_concurrent):
            queued = jobs.submit(
                session,
                settings,
                site.rita,
                tool_ref="hello@1.0.0",
                dataset_names=["lung"],
                flavor="no-gpu",
                command=None,
            )
            assert queued.job is not None
    result = _submit(site).preflight
    assert [p.code for p in result.problems] == ["quota_concurrent"]
    assert "insitu job cancel" in result.problems[0].fix


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_quota_of_a_project(site: Site) -> None:
    from insitu.access import service as access
    from insitu.ledger import service as ledger

    platform = site.platform
    with session_scope(platform.sessions) as session:
        lab = access.create_project(session, "lab", "A lab", ledger.HOST_ACTOR)
        for name in ("rita", "stan"):
            user = access.get_user(session, name)
            assert user is not None
            access.add_member(session, lab, user, "member", ledger.HOST_ACTOR)
    platform.settings.project_max_concurrent = 1
    first = _submit(site, project="lab", dry_run=False)
    assert first.job is not None
    assert first.job.project_id is not None
    result = _submit(site, project="lab").preflight
    assert [p.code for p in result.problems] == ["quota_project_concurrent"]
    assert "your project have 1 jobs" in result.problems[0].message
    assert _submit(site).preflight.ok  # without --project, only the user's quota counts
