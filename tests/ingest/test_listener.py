"""DCMTK's storescu sends to ``insitu dicom listen``; only allowed calling AE titles get in."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from insitu.catalog.models import Instance
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest.corpus import generate_corpus
from insitu.ingest.deid.table import Options
from insitu.ingest.listener import DicomListener
from tests.servers import free_port

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(
        shutil.which("storescu") is None,
        reason="DCMTK is not installed; run ./scripts/bootstrap.sh",
    ),
]


@pytest.fixture
def listener(sqlite_platform: Platform) -> Iterator[tuple[DicomListener, int]]:
    port = free_port()
    server = DicomListener(
        sqlite_platform,
        ae_title="INSITU",
        allowed_calling=["HOSPITAL_PACS"],
        site="SITE-C",
        options=Options.parse("retain-long-modified-dates"),
        workers=1,
    )
    server.start("127.0.0.1", port)
    yield server, port
    server.stop()


def _instances(platform: Platform) -> int:
    with session_scope(platform.sessions) as session:
        return session.scalar(select(func.count(Instance.id))) or 0


def test_storescu_delivers_into_the_catalogue(
    listener: tuple[DicomListener, int], sqlite_platform: Platform, tmp_path: Path
) -> None:
    server, port = listener
    corpus = generate_corpus(
        tmp_path / "export", subjects=2, ct_slices=5, mr_slices=0, rows=64, columns=64
    )
    sent = subprocess.run(
        [
            "storescu",
            "-aet",
            "HOSPITAL_PACS",
            "-aec",
            "INSITU",
            "+sd",
            "+r",
            "127.0.0.1",
            str(port),
            str(corpus.root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 30
    while _instances(sqlite_platform) < 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _instances(sqlite_platform) == 10
    assert server.received == 10
    # What arrived over the network is de-identified like any other ingest.
    for digest in sqlite_platform.store.digests():
        data = sqlite_platform.store.get(digest)
        assert corpus.patients[0].patient_id.encode() not in data
        assert b"Harbour" not in data


def test_unknown_calling_ae_title_is_refused(
    listener: tuple[DicomListener, int], sqlite_platform: Platform, tmp_path: Path
) -> None:
    _server, port = listener
    corpus = generate_corpus(
        tmp_path / "export", subjects=1, ct_slices=1, mr_slices=0, rows=16, columns=16
    )
    sent = subprocess.run(
        [
            "storescu",
            "-aet",
            "STRANGER",
            "-aec",
            "INSITU",
            "127.0.0.1",
            str(port),
            str(corpus.files[0]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode != 0
    assert "Rejected" in sent.stderr or "rejected" in sent.stderr.lower()
    time.sleep(0.5)
    assert _instances(sqlite_platform) == 0
