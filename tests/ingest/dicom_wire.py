"""A hand-built DICOM upper-layer client for tests: written from PS3.8, not from insitu's code.

It lets tests send what real senders rarely do (fragmented commands, PDVs split across PDUs,
garbage, oversize PDUs) and read the raw answers.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"


def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def associate_rq(
    called: str,
    calling: str,
    contexts: list[tuple[int, str, list[str]]],
    *,
    application_context: str = "1.2.840.10008.3.1.1.1",
    version: int = 1,
) -> bytes:
    body = struct.pack(">HH", version, 0)
    body += called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
    body += item(0x10, application_context.encode())
    for context_id, abstract, transfers in contexts:
        value = bytes([context_id, 0, 0, 0]) + item(0x30, abstract.encode())
        value += b"".join(item(0x40, t.encode()) for t in transfers)
        body += item(0x20, value)
    body += item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    return pdu(0x01, body)


def uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\x00" if len(raw) % 2 else raw


def command(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(
        struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(v)) + v for tag, v in sorted(elements)
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    return command(
        [
            (0x0000_0002, uid(sop_class)),
            (0x0000_0100, struct.pack("<H", 0x0001)),
            (0x0000_0110, struct.pack("<H", message_id)),
            (0x0000_0700, struct.pack("<H", 0)),
            (0x0000_0800, struct.pack("<H", 0x0000)),
            (0x0000_1000, uid(sop_instance)),
        ]
    )


def c_echo_rq(message_id: int) -> bytes:
    return command(
        [
            (0x0000_0002, uid("1.2.840.10008.1.1")),
            (0x0000_0100, struct.pack("<H", 0x0030)),
            (0x0000_0110, struct.pack("<H", message_id)),
            (0x0000_0800, struct.pack("<H", 0x0101)),
        ]
    )


def pdv(context_id: int, data: bytes, *, is_command: bool, last: bool) -> bytes:
    header = (0x01 if is_command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">IBB", len(data) + 2, context_id, header) + data


def p_data(*pdvs: bytes) -> bytes:
    return pdu(0x04, b"".join(pdvs))


def parse_command(data: bytes) -> dict[int, bytes]:
    elements: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        group, element, length = struct.unpack_from("<HHI", data, pos)
        elements[(group << 16) | element] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return elements


@dataclass
class Pdu:
    type: int
    body: bytes


class WireClient:
    """A blocking connection that sends raw bytes and reads whole PDUs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, length: int) -> bytes:
        data = b""
        while len(data) < length:
            chunk = self.sock.recv(length - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def receive(self) -> Pdu:
        header = self._exact(6)
        (length,) = struct.unpack(">I", header[2:])
        return Pdu(header[0], self._exact(length))

    def closed(self) -> bool:
        """Whether the peer closed the connection (waits for it)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def associate(
        self, called: str, calling: str, contexts: list[tuple[int, str, list[str]]]
    ) -> Pdu:
        self.send(associate_rq(called, calling, contexts))
        return self.receive()

    def response_status(self) -> tuple[int, int]:
        """(command field, status) of the next command response."""
        answer = self.receive()
        assert answer.type == 0x04, answer
        elements = parse_command(answer.body[6:])
        return (
            struct.unpack("<H", elements[0x0000_0100])[0],
            struct.unpack("<H", elements[0x0000_0900])[0],
        )

    def release(self) -> Pdu:
        self.send(pdu(0x05, bytes(4)))
        return self.receive()

    def close(self) -> None:
        self.sock.close()
