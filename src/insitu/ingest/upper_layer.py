"""The parts of the DICOM upper layer (PS3.8) and DIMSE (PS3.7) a storage SCP needs.

Pure encoding and decoding, no sockets: ``listener.py`` drives these over a connection.
PDU lengths are big-endian (PS3.8 9.3); command sets are Implicit VR Little Endian (PS3.7 6.3.1).
Reading is tolerant (unknown items and sub-items are skipped), building is strict.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import AllTransferSyntaxes, PrivateTransferSyntaxes

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
PROTOCOL_VERSION = 0x0001
FIXED_ASSOCIATE_FIELDS = 68  # version, reserved, called AE, calling AE, 32 reserved bytes


class PduType(IntEnum):
    """PDU types (PS3.8 Table 9-1 and following)."""

    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


class ContextResult(IntEnum):
    """Presentation context result/reason (PS3.8 Table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ reasons for source 1, service-user (PS3.8 Table 9-21)."""

    NO_REASON = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7


class AbortReason(IntEnum):
    """A-ABORT reasons when the service provider aborts (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class CommandField(IntEnum):
    """DIMSE command fields (PS3.7 Annex E)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030


class Tag(IntEnum):
    """Command set attributes, as (group << 16) | element."""

    COMMAND_GROUP_LENGTH = 0x0000_0000
    AFFECTED_SOP_CLASS_UID = 0x0000_0002
    COMMAND_FIELD = 0x0000_0100
    MESSAGE_ID = 0x0000_0110
    MESSAGE_ID_BEING_RESPONDED_TO = 0x0000_0120
    COMMAND_DATA_SET_TYPE = 0x0000_0800
    STATUS = 0x0000_0900
    AFFECTED_SOP_INSTANCE_UID = 0x0000_1000


NO_DATA_SET = 0x0101


class ProtocolError(Exception):
    """The peer broke PS3.8 or PS3.7; the association must be aborted."""

    def __init__(
        self, message: str, reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE
    ) -> None:
        super().__init__(message)
        self.reason = reason


def _storage_sop_classes() -> frozenset[str]:
    excluded = ("Commitment", "Management", "Media Storage Directory")
    return frozenset(
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name and not any(x in name for x in excluded)
    )


STORAGE_SOP_CLASSES = _storage_sop_classes()
SUPPORTED_TRANSFER_SYNTAXES = frozenset(str(uid) for uid in AllTransferSyntaxes) - frozenset(
    str(uid) for uid in PrivateTransferSyntaxes
)


@dataclass(frozen=True)
class ContextProposal:
    """One proposed presentation context of an A-ASSOCIATE-RQ."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class ContextDecision:
    """What the acceptor answers for one presentation context."""

    context_id: int
    result: ContextResult
    transfer_syntax: str
    abstract_syntax: str = ""


@dataclass
class AssociateRequest:
    """The parts of an A-ASSOCIATE-RQ a storage SCP looks at."""

    called_ae_title: str
    calling_ae_title: str
    protocol_version: int
    application_context_name: str = ""
    contexts: list[ContextProposal] = field(default_factory=list)
    max_pdu_length: int = 0
    implementation_class_uid: str = ""
    implementation_version_name: str = ""


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace").strip(" \x00")


def _items(data: bytes, start: int, end: int) -> list[tuple[int, bytes]]:
    """Type-length-value items with a 1-byte type, 1 reserved byte and a 2-byte length."""
    found: list[tuple[int, bytes]] = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError(f"truncated item header at byte {pos}")
        item_type = data[pos]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if pos + 4 + length > end:
            raise ProtocolError(f"item 0x{item_type:02X} at byte {pos} runs past its PDU")
        found.append((item_type, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return found


def parse_associate_request(body: bytes) -> AssociateRequest:
    """Decode the variable part of an A-ASSOCIATE-RQ (everything after the 6-byte header)."""
    if len(body) < FIXED_ASSOCIATE_FIELDS:
        raise ProtocolError("A-ASSOCIATE-RQ shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    request = AssociateRequest(
        called_ae_title=_text(body[4:20]),
        calling_ae_title=_text(body[20:36]),
        protocol_version=version,
    )
    for item_type, value in _items(body, FIXED_ASSOCIATE_FIELDS, len(body)):
        if item_type == 0x10:
            request.application_context_name = _text(value)
        elif item_type == 0x20:
            request.contexts.append(_parse_context(value))
        elif item_type == 0x50:
            _parse_user_information(value, request)
    return request


def _parse_context(value: bytes) -> ContextProposal:
    if len(value) < 4:
        raise ProtocolError("presentation context item shorter than 4 bytes")
    abstract_syntax = ""
    transfer_syntaxes: list[str] = []
    for sub_type, sub_value in _items(value, 4, len(value)):
        if sub_type == 0x30:
            abstract_syntax = _text(sub_value)
        elif sub_type == 0x40:
            transfer_syntaxes.append(_text(sub_value))
    return ContextProposal(value[0], abstract_syntax, tuple(transfer_syntaxes))


def _parse_user_information(value: bytes, request: AssociateRequest) -> None:
    for sub_type, sub_value in _items(value, 0, len(value)):
        if sub_type == 0x51 and len(sub_value) == 4:
            (request.max_pdu_length,) = struct.unpack(">I", sub_value)
        elif sub_type == 0x52:
            request.implementation_class_uid = _text(sub_value)
        elif sub_type == 0x55:
            request.implementation_version_name = _text(sub_value)


def negotiate(proposal: ContextProposal) -> ContextDecision:
    """Accept storage and verification with the first proposed transfer syntax we support."""
    fallback = proposal.transfer_syntaxes[0] if proposal.transfer_syntaxes else ""
    known = proposal.abstract_syntax in STORAGE_SOP_CLASSES
    if not known and proposal.abstract_syntax != VERIFICATION_SOP_CLASS:
        return ContextDecision(
            proposal.context_id, ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, fallback
        )
    for uid in proposal.transfer_syntaxes:
        if uid in SUPPORTED_TRANSFER_SYNTAXES:
            return ContextDecision(
                proposal.context_id, ContextResult.ACCEPTANCE, uid, proposal.abstract_syntax
            )
    return ContextDecision(
        proposal.context_id, ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, fallback
    )


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} is longer than 65535 bytes")
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _pdu(pdu_type: PduType, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    raw = title.encode("ascii")
    if not 0 < len(raw) <= 16:
        raise ValueError(f"AE title {title!r} must be 1 to 16 ASCII characters")
    return raw.ljust(16, b" ")


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_associate_accept(
    request: AssociateRequest,
    decisions: list[ContextDecision],
    *,
    max_pdu_length: int,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """An A-ASSOCIATE-AC answering ``request`` with one decision per proposed context."""
    contexts = b"".join(
        _item(
            0x21,
            struct.pack(">BBBB", d.context_id, 0, d.result, 0)
            + _item(0x40, d.transfer_syntax.encode("ascii")),
        )
        for d in decisions
    )
    user_information = _item(
        0x50,
        _item(0x51, struct.pack(">I", max_pdu_length))
        + _item(0x52, implementation_class_uid.encode("ascii"))
        + _item(0x55, implementation_version_name.encode("ascii")),
    )
    # Called and calling AE titles are echoed as received (PS3.8 9.3.3.2).
    fixed = (
        struct.pack(">HH", PROTOCOL_VERSION, 0)
        + _ae(request.called_ae_title or "ANY")
        + _ae(request.calling_ae_title or "ANY")
        + bytes(32)
    )
    application = _item(0x10, APPLICATION_CONTEXT_NAME.encode("ascii"))
    return _pdu(PduType.ASSOCIATE_AC, fixed + application + contexts + user_information)


def encode_associate_reject(reason: RejectReason) -> bytes:
    """A permanent A-ASSOCIATE-RJ from the service user."""
    return _pdu(PduType.ASSOCIATE_RJ, struct.pack(">BBBB", 0, 1, 1, reason))


def encode_protocol_version_reject() -> bytes:
    """A permanent A-ASSOCIATE-RJ from the ACSE provider: protocol version not supported."""
    return _pdu(PduType.ASSOCIATE_RJ, struct.pack(">BBBB", 0, 1, 2, 2))


def encode_associate_busy() -> bytes:
    """A transient A-ASSOCIATE-RJ: local limit exceeded, try again later."""
    return _pdu(PduType.ASSOCIATE_RJ, struct.pack(">BBBB", 0, 2, 3, 2))


def encode_release_response() -> bytes:
    """An A-RELEASE-RP."""
    return _pdu(PduType.RELEASE_RP, bytes(4))


def encode_abort(reason: AbortReason) -> bytes:
    """An A-ABORT from the service provider."""
    return _pdu(PduType.ABORT, struct.pack(">BBBB", 0, 0, 2, reason))


def encode_command_pdu(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF carrying one whole command set in a single PDV."""
    pdv = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return _pdu(PduType.P_DATA_TF, pdv)


def parse_command(data: bytes | bytearray) -> dict[int, bytes]:
    """The elements of an Implicit VR Little Endian command set, keyed by tag."""
    elements: dict[int, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        if pos + 8 > end:
            raise ProtocolError("command set ends inside an element header")
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if pos + length > end:
            raise ProtocolError(f"command element ({group:04X},{element:04X}) runs past the end")
        elements[(group << 16) | element] = bytes(data[pos : pos + length])
        pos += length
    return elements


def command_uint(elements: dict[int, bytes], tag: Tag) -> int:
    """A US value of a command set; a missing or malformed one is a protocol error."""
    raw = elements.get(tag)
    if raw is None or len(raw) != 2:
        raise ProtocolError(f"command set lacks a valid {tag.name}")
    return int.from_bytes(raw, "little")


def command_uid(elements: dict[int, bytes], tag: Tag) -> str:
    """A UI value of a command set, without padding ('' when absent)."""
    return _text(elements.get(tag, b""))


def encode_command(elements: list[tuple[Tag, bytes]]) -> bytes:
    """An Implicit VR Little Endian command set with its group length first."""
    body = b"".join(
        struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
        for tag, value in sorted(elements)
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def response(
    command_field: CommandField,
    *,
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str = "",
) -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set."""
    elements = [
        (Tag.AFFECTED_SOP_CLASS_UID, _uid(sop_class_uid)),
        (Tag.COMMAND_FIELD, _us(command_field)),
        (Tag.MESSAGE_ID_BEING_RESPONDED_TO, _us(message_id)),
        (Tag.COMMAND_DATA_SET_TYPE, _us(NO_DATA_SET)),
        (Tag.STATUS, _us(status)),
    ]
    if sop_instance_uid:
        elements.append((Tag.AFFECTED_SOP_INSTANCE_UID, _uid(sop_instance_uid)))
    return encode_command(elements)
