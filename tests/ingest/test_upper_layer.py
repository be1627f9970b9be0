"""The listener's DICOM upper-layer codec, checked against PS3.8 bytes and pynetdicom's decoder."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom.dsutils import decode
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_RELEASE_RP

from insitu.ingest import upper_layer as ul
from tests.ingest import dicom_wire as wire

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
PRIVATE_SYNTAX = "1.2.840.113619.5.2"  # a vendor syntax nobody but its vendor reads


def _request(contexts: list[tuple[int, str, list[str]]]) -> ul.AssociateRequest:
    return ul.parse_associate_request(wire.associate_rq("INSITU", "PACS", contexts)[6:])


def test_associate_request_fields_are_read() -> None:
    request = _request([(1, wire.CT_IMAGE_STORAGE, [wire.EXPLICIT_VR_LE, wire.IMPLICIT_VR_LE])])
    assert request.called_ae_title == "INSITU"
    assert request.calling_ae_title == "PACS"
    assert request.protocol_version == 1
    assert request.application_context_name == ul.APPLICATION_CONTEXT_NAME
    assert request.max_pdu_length == 16384
    assert request.implementation_class_uid == "1.2.3.4"
    assert request.contexts == [
        ul.ContextProposal(1, wire.CT_IMAGE_STORAGE, (wire.EXPLICIT_VR_LE, wire.IMPLICIT_VR_LE))
    ]


@pytest.mark.parametrize(
    ("abstract", "transfers", "result", "chosen"),
    [
        (wire.CT_IMAGE_STORAGE, [PRIVATE_SYNTAX, wire.EXPLICIT_VR_LE], 0, wire.EXPLICIT_VR_LE),
        (wire.CT_IMAGE_STORAGE, [JPEG_BASELINE], 0, JPEG_BASELINE),
        (ul.VERIFICATION_SOP_CLASS, [wire.IMPLICIT_VR_LE], 0, wire.IMPLICIT_VR_LE),
        (wire.CT_IMAGE_STORAGE, [PRIVATE_SYNTAX], 4, None),
        ("1.2.840.10008.5.1.4.1.2.1.1", [wire.IMPLICIT_VR_LE], 3, None),  # C-FIND, not storage
        ("1.2.840.10008.1.20.1", [wire.IMPLICIT_VR_LE], 3, None),  # storage commitment
    ],
)
def test_negotiation(abstract: str, transfers: list[str], result: int, chosen: str | None) -> None:
    decision = ul.negotiate(ul.ContextProposal(5, abstract, tuple(transfers)))
    assert decision.context_id == 5
    assert decision.result == result
    if chosen is not None:
        assert decision.transfer_syntax == chosen
        assert decision.abstract_syntax == abstract


def test_accept_decodes_with_pynetdicom() -> None:
    request = _request(
        [(1, wire.CT_IMAGE_STORAGE, [wire.EXPLICIT_VR_LE]), (3, "1.2.3.4", [wire.IMPLICIT_VR_LE])]
    )
    pdu = ul.encode_associate_accept(
        request,
        [ul.negotiate(c) for c in request.contexts],
        max_pdu_length=1048576,
        implementation_class_uid="1.2.826.0.1.3680043.10.1",
        implementation_version_name="INSITU_01",
    )
    accept = A_ASSOCIATE_AC()
    accept.decode(pdu)
    assert accept.called_ae_title == "INSITU"
    assert accept.calling_ae_title == "PACS"
    assert accept.application_context_name == ul.APPLICATION_CONTEXT_NAME
    assert [(c.context_id, c.result, c.transfer_syntax) for c in accept.presentation_context] == [
        (1, 0, wire.EXPLICIT_VR_LE),
        (3, 3, wire.IMPLICIT_VR_LE),
    ]
    user = accept.user_information
    assert user is not None
    assert user.maximum_length == 1048576
    assert user.implementation_class_uid == "1.2.826.0.1.3680043.10.1"
    assert user.implementation_version_name == "INSITU_01"


def test_reject_release_and_abort_decode_with_pynetdicom() -> None:
    reject = A_ASSOCIATE_RJ()
    reject.decode(ul.encode_associate_reject(ul.RejectReason.CALLING_AE_NOT_RECOGNIZED))
    assert (reject.result, reject.source, reject.reason_diagnostic) == (1, 1, 3)
    busy = A_ASSOCIATE_RJ()
    busy.decode(ul.encode_associate_busy())
    assert (busy.result, busy.source, busy.reason_diagnostic) == (2, 3, 2)
    release = A_RELEASE_RP()
    release.decode(ul.encode_release_response())
    abort = A_ABORT_RQ()
    abort.decode(ul.encode_abort(ul.AbortReason.UNEXPECTED_PDU))
    assert (abort.source, abort.reason_diagnostic) == (2, 2)


def test_responses_are_implicit_little_endian_command_sets() -> None:
    data = ul.response(
        ul.CommandField.C_STORE_RSP,
        message_id=7,
        status=0xA700,
        sop_class_uid=wire.CT_IMAGE_STORAGE,
        sop_instance_uid="1.2.3.4.5",
    )
    command = decode(BytesIO(data), is_implicit_vr=True, is_little_endian=True)
    assert command.CommandGroupLength == len(data) - 12
    assert command.CommandField == 0x8001
    assert command.MessageIDBeingRespondedTo == 7
    assert command.CommandDataSetType == 0x0101
    assert command.Status == 0xA700
    assert command.AffectedSOPClassUID == wire.CT_IMAGE_STORAGE
    assert command.AffectedSOPInstanceUID == "1.2.3.4.5"


def test_command_parsing_reads_what_a_sender_encodes() -> None:
    elements = ul.parse_command(wire.c_store_rq(9, wire.CT_IMAGE_STORAGE, "1.2.3.9"))
    assert ul.command_uint(elements, ul.Tag.COMMAND_FIELD) == ul.CommandField.C_STORE_RQ
    assert ul.command_uint(elements, ul.Tag.MESSAGE_ID) == 9
    assert ul.command_uid(elements, ul.Tag.AFFECTED_SOP_INSTANCE_UID) == "1.2.3.9"


@pytest.mark.parametrize(
    "data",
    [
        wire.c_store_rq(1, wire.CT_IMAGE_STORAGE, "1.2.3")[:-3],  # value cut short
        struct.pack("<HH", 0, 0x0100),  # element header cut short
    ],
)
def test_truncated_command_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ul.ProtocolError):
        ul.parse_command(data)


def test_missing_command_field_is_a_protocol_error() -> None:
    with pytest.raises(ul.ProtocolError, match="COMMAND_FIELD"):
        ul.command_uint({}, ul.Tag.COMMAND_FIELD)


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01" + bytes(30),  # shorter than the fixed fields
        wire.associate_rq("INSITU", "PACS", [])[6:] + b"\x20\x00\xff\xff\x01",  # item overruns
        wire.associate_rq("INSITU", "PACS", [])[6:] + b"\x20\x00\x00\x02\x01\x00",  # too short
    ],
)
def test_malformed_associate_request_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_request(body)


def test_storage_classes_cover_common_modalities_and_exclude_services() -> None:
    for storage in (
        wire.CT_IMAGE_STORAGE,
        "1.2.840.10008.5.1.4.1.1.4",  # MR
        "1.2.840.10008.5.1.4.1.1.128",  # PET
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (quarantined later, but received)
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    ):
        assert storage in ul.STORAGE_SOP_CLASSES
    assert "1.2.840.10008.1.20.1" not in ul.STORAGE_SOP_CLASSES  # storage commitment
    assert "1.2.840.10008.1.3.10" not in ul.STORAGE_SOP_CLASSES  # DICOMDIR
