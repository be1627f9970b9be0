"""``insitu dicom listen`` against real senders: DCMTK, pynetdicom and a raw PS3.8 client.

Only allowed calling AE titles get in, only to our AE title; broken peers are aborted without
harming the listener; what arrives is de-identified like any other ingest.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import func, select

from insitu.catalog.models import Instance
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest import listener as listener_module
from insitu.ingest.corpus import generate_corpus
from insitu.ingest.deid.table import Options
from insitu.ingest.listener import DicomListener
from tests.ingest import dicom_wire as wire

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(
        shutil.which("storescu") is None,
        reason="DCMTK is not installed; run ./scripts/bootstrap.sh",
    ),
]


ListenerFactory = Callable[..., DicomListener]
VERIFICATION = "1.2.840.10008.1.1"
CT_CONTEXTS = [(1, wire.CT_IMAGE_STORAGE, [wire.EXPLICIT_VR_LE])]
ECHO_CONTEXTS = [(1, VERIFICATION, [wire.IMPLICIT_VR_LE])]


@pytest.fixture
def make_listener(sqlite_platform: Platform) -> Iterator[ListenerFactory]:
    started: list[DicomListener] = []

    def make(**overrides: object) -> DicomListener:
        arguments: dict[str, object] = {
            "ae_title": "INSITU",
            "allowed_calling": ["HOSPITAL_PACS"],
            "site": "SITE-C",
            "options": Options.parse("retain-long-modified-dates"),
            "workers": 1,
            **overrides,
        }
        server = DicomListener(sqlite_platform, **arguments)  # type: ignore[arg-type]
        server.start("127.0.0.1", 0)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(grace_seconds=1)


@pytest.fixture
def listener(make_listener: ListenerFactory) -> tuple[DicomListener, int]:
    server = make_listener()
    return server, server.port


def _instances(platform: Platform) -> int:
    with session_scope(platform.sessions) as session:
        return session.scalar(select(func.count(Instance.id))) or 0


STORESCU = ("storescu", "-aet", "HOSPITAL_PACS", "-aec", "INSITU", "+sd", "+r")


def _send_and_wait(port: int, path: Path, platform: Platform, expected: int) -> None:
    """storescu (default settings) sends a file or folder; wait until it is catalogued."""
    sent = subprocess.run(
        [*STORESCU, "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 30
    while _instances(platform) < expected and time.monotonic() < deadline:
        time.sleep(0.2)


def test_storescu_delivers_into_the_catalogue(
    listener: tuple[DicomListener, int], sqlite_platform: Platform, tmp_path: Path
) -> None:
    server, port = listener
    corpus = generate_corpus(
        tmp_path / "export", subjects=2, ct_slices=5, mr_slices=0, rows=64, columns=64
    )
    _send_and_wait(port, corpus.root, sqlite_platform, expected=10)
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


def _wait_for_instances(platform: Platform, expected: int) -> int:
    deadline = time.monotonic() + 30
    while _instances(platform) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return _instances(platform)


def _dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's data set, without preamble and file meta (Explicit VR LE here)."""
    data = path.read_bytes()
    (meta_length,) = struct.unpack_from("<I", data, 140)
    return data[144 + meta_length :]


def test_echoscu_verifies_and_a_wrong_called_ae_title_is_refused(
    listener: tuple[DicomListener, int],
) -> None:
    _server, port = listener

    def echoscu(called: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["echoscu", "-aet", "HOSPITAL_PACS", "-aec", called, "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    ok = echoscu("INSITU")
    assert ok.returncode == 0, ok.stderr
    wrong = echoscu("SOMEONE_ELSE")
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr


def test_pynetdicom_negotiates_storage_but_not_query(
    listener: tuple[DicomListener, int],
) -> None:
    """An independent implementation's A-ASSOCIATE-RQ: storage and verification are accepted,
    a query model is rejected, and the association releases cleanly. (Instances are sent by
    DCMTK and the raw client in the other tests: pynetdicom's own requestor can lose a
    response that arrives very fast on a loaded machine, "Received unexpected C-STORE service
    message", which would make this test about pynetdicom.)"""
    _server, port = listener
    sender = AE(ae_title="HOSPITAL_PACS")
    sender.add_requested_context(wire.CT_IMAGE_STORAGE, wire.EXPLICIT_VR_LE)
    sender.add_requested_context(VERIFICATION)
    sender.add_requested_context("1.2.840.10008.5.1.4.1.2.1.1")  # patient root C-FIND
    association = sender.associate("127.0.0.1", port, ae_title="INSITU")
    assert association.is_established
    try:
        accepted = {c.abstract_syntax for c in association.accepted_contexts}
        rejected = {c.abstract_syntax for c in association.rejected_contexts}
        assert accepted == {wire.CT_IMAGE_STORAGE, VERIFICATION}
        assert rejected == {"1.2.840.10008.5.1.4.1.2.1.1"}
        assert association.acceptor.maximum_length == listener_module.MAX_PDU_LENGTH
    finally:
        association.release()
    assert association.is_released


def test_fragmented_commands_and_data_sets_are_reassembled(
    listener: tuple[DicomListener, int], sqlite_platform: Platform, tmp_path: Path
) -> None:
    _server, port = listener
    corpus = generate_corpus(
        tmp_path / "export", subjects=1, ct_slices=1, mr_slices=0, rows=32, columns=32
    )
    original = dcmread(corpus.files[0])
    dataset = _dataset_bytes(corpus.files[0])
    client = wire.WireClient(port)
    try:
        accept = client.associate(
            "INSITU", "HOSPITAL_PACS", [(1, wire.CT_IMAGE_STORAGE, [wire.EXPLICIT_VR_LE])]
        )
        assert accept.type == 0x02
        command = wire.c_store_rq(3, wire.CT_IMAGE_STORAGE, original.SOPInstanceUID)
        third = len(dataset) // 3
        # The command split over two PDUs; the data set in three PDVs, two of them in one PDU.
        client.send(wire.p_data(wire.pdv(1, command[:10], is_command=True, last=False)))
        client.send(
            wire.p_data(
                wire.pdv(1, command[10:], is_command=True, last=True),
                wire.pdv(1, dataset[:third], is_command=False, last=False),
            )
        )
        client.send(
            wire.p_data(
                wire.pdv(1, dataset[third : 2 * third], is_command=False, last=False),
                wire.pdv(1, dataset[2 * third :], is_command=False, last=True),
            )
        )
        assert client.response_status() == (0x8001, 0x0000)
        assert client.release().type == 0x06
    finally:
        client.close()
    assert _wait_for_instances(sqlite_platform, 1) == 1
    digest = next(iter(sqlite_platform.store.digests()))
    stored = dcmread(BytesIO(sqlite_platform.store.get(digest)))
    assert stored.PixelData == original.PixelData
    assert stored.PatientID != original.PatientID


@pytest.mark.parametrize(
    ("after_associate", "expected_reason"),
    [
        # A PDV on a presentation context that was never accepted.
        (wire.p_data(wire.pdv(9, wire.c_echo_rq(1), is_command=True, last=True)), 6),
        # A P-DATA-TF claiming to be far larger than the maximum we announced.
        (struct.pack(">BBI", 0x04, 0, 512 * 1024 * 1024), 6),
        # An unknown PDU type.
        (wire.pdu(0x09, bytes(4)), 2),
        # A data set with no command before it.
        (wire.p_data(wire.pdv(1, b"\x08\x00", is_command=False, last=True)), 6),
    ],
)
def test_broken_peers_are_aborted_and_the_listener_carries_on(
    listener: tuple[DicomListener, int], after_associate: bytes, expected_reason: int
) -> None:
    _server, port = listener
    client = wire.WireClient(port)
    try:
        client.associate(
            "INSITU", "HOSPITAL_PACS", [(1, wire.CT_IMAGE_STORAGE, [wire.EXPLICIT_VR_LE])]
        )
        client.send(after_associate)
        abort = client.receive()
        assert abort.type == 0x07
        assert abort.body[2:] == bytes([2, expected_reason])
        assert client.closed()
    finally:
        client.close()
    healthy = wire.WireClient(port)
    try:
        assert (
            healthy.associate(
                "INSITU", "HOSPITAL_PACS", [(1, "1.2.840.10008.1.1", [wire.IMPLICIT_VR_LE])]
            ).type
            == 0x02
        )
        healthy.send(wire.p_data(wire.pdv(1, wire.c_echo_rq(5), is_command=True, last=True)))
        assert healthy.response_status() == (0x8030, 0x0000)
        assert healthy.release().type == 0x06
    finally:
        healthy.close()


def test_garbage_instead_of_an_association_request_is_aborted(
    listener: tuple[DicomListener, int],
) -> None:
    _server, port = listener
    client = wire.WireClient(port)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.receive().type == 0x07
        assert client.closed()
    finally:
        client.close()


def test_associations_over_the_limit_are_told_to_come_back_later(
    make_listener: ListenerFactory,
) -> None:
    server = make_listener(max_associations=1)
    first = wire.WireClient(server.port)
    second = wire.WireClient(server.port)
    contexts = [(1, "1.2.840.10008.1.1", [wire.IMPLICIT_VR_LE])]
    try:
        assert first.associate("INSITU", "HOSPITAL_PACS", contexts).type == 0x02
        busy = second.associate("INSITU", "HOSPITAL_PACS", contexts)
        assert busy.type == 0x03
        assert busy.body[1:] == bytes([2, 3, 2])  # transient, provider, local limit exceeded
        assert first.release().type == 0x06
    finally:
        first.close()
        second.close()


def test_stop_aborts_an_association_left_open(make_listener: ListenerFactory) -> None:
    server = make_listener()
    client = wire.WireClient(server.port)
    try:
        client.associate(
            "INSITU", "HOSPITAL_PACS", [(1, "1.2.840.10008.1.1", [wire.IMPLICIT_VR_LE])]
        )
        stopper = threading.Thread(target=server.stop, kwargs={"grace_seconds": 0.3})
        started = time.monotonic()
        stopper.start()
        assert client.receive().type == 0x07
        stopper.join(timeout=10)
        assert not stopper.is_alive()
        assert time.monotonic() - started < 5
    finally:
        client.close()


def test_memory_budget_answers_out_of_resources(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener_module, "QUEUE_WAIT_SECONDS", 0.1)
    # Not started: nothing drains the queue, as when de-identification falls behind.
    server = DicomListener(
        sqlite_platform,
        ae_title="INSITU",
        allowed_calling=["HOSPITAL_PACS"],
        site="SITE-C",
        options=Options.parse(""),
        queue_bytes=1000,
    )
    assert server.accept_instance("HOSPITAL_PACS", bytes(600)) == 0x0000  # queue was empty
    assert server.accept_instance("HOSPITAL_PACS", bytes(600)) == 0xA700
    assert server.accept_instance("HOSPITAL_PACS", bytes(300)) == 0x0000
    assert server.received == 2


@pytest.mark.parametrize("title", ["", "A" * 17, "BAD\\AE", "ÆTITLE"])
def test_invalid_ae_titles_are_refused(sqlite_platform: Platform, title: str) -> None:
    with pytest.raises(ValueError, match="AE title"):
        DicomListener(
            sqlite_platform,
            ae_title=title,
            allowed_calling=["HOSPITAL_PACS"],
            site="SITE-C",
            options=Options.parse(""),
        )


def test_planted_identifiers_sent_by_c_store_go_through_the_same_engine(
    listener: tuple[DicomListener, int], sqlite_platform: Platform, tmp_path: Path
) -> None:
    from tests.ingest import adversarial

    _server, port = listener
    path = tmp_path / "planted" / "wrong-vr.dcm"
    path.parent.mkdir()
    path.write_bytes(adversarial.wrong_vr_file())
    _send_and_wait(port, path, sqlite_platform, expected=1)
    assert _instances(sqlite_platform) == 1
    for digest in sqlite_platform.store.digests():
        data = sqlite_platform.store.get(digest)
        assert b"QZ2" not in data
        assert b"QZ3" not in data
