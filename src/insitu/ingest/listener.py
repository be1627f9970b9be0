"""DICOM C-STORE receiver feeding the same de-identifying ingest as ``insitu ingest``.

A lean storage SCP on the DICOM upper layer (``upper_layer.py``): one thread per association
reads whole PDUs through a large buffer and appends data-set fragments straight into the
instance's bytes, so a sender is limited by the network, not by per-PDU Python work.

Received instances are queued in memory (never spooled to disk: they still carry PHI) and
de-identified by the worker pool in batches; a batch ends after a short idle period. The C-STORE
response is sent once the instance is queued, so a sender's throughput does not wait on
de-identification, while the bounded queue keeps memory bounded. Only configured calling AE
titles may associate, and only to our AE title. Every accepted connection gets TCP_NODELAY so
that small PDUs (responses) are not held back by Nagle's algorithm.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from insitu.core.platform import Platform
from insitu.ingest import service
from insitu.ingest import upper_layer as ul
from insitu.ingest.deid.table import Options
from insitu.ingest.encoder import encode_file_meta
from insitu.ingest.processor import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from insitu.ingest.sources import MAX_MEMBER_BYTES, SourceItem

log = logging.getLogger(__name__)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
IDLE_SECONDS = 1.0
QUEUE_WAIT_SECONDS = 60.0
# What we tell senders they may put in one P-DATA-TF; a little more is tolerated from peers
# that round up, anything beyond HARD_PDU_LIMIT is an attack or a broken peer.
MAX_PDU_LENGTH = 1024 * 1024
HARD_PDU_LIMIT = 16 * MAX_PDU_LENGTH
MAX_ASSOCIATE_LENGTH = 64 * 1024
ASSOCIATE_TIMEOUT_SECONDS = 30.0
IDLE_TIMEOUT_SECONDS = 300.0
READ_BUFFER = 1024 * 1024
_STOP = object()


def check_ae_title(title: str) -> str | None:
    """Why ``title`` is not a valid AE title (PS3.5 AE VR), or None when it is."""
    stripped = title.strip()
    if not 0 < len(stripped) <= 16:
        return "an AE title has 1 to 16 characters (leading and trailing spaces do not count)"
    if not stripped.isascii() or any(c == "\\" or not c.isprintable() for c in stripped):
        return "an AE title is printable ASCII without backslashes"
    return None


class _ConnectionClosedError(Exception):
    """The peer closed the connection (or aborted) before the association ended cleanly."""


class _SocketReader:
    """Exact-length reads from a socket through one large buffer, acknowledging at once.

    Senders such as DCMTK's storescu leave Nagle's algorithm on, so the last small segment of
    each instance waits for our ACK of the one before; with Linux's delayed ACK that stalls
    every instance by up to 40 ms. TCP_QUICKACK (which the kernel clears again after use) is
    re-armed after every receive so that the sender never waits on us.
    """

    def __init__(self, connection: socket.socket, size: int = READ_BUFFER) -> None:
        self.connection = connection
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self.start = 0
        self.end = 0
        self.quickack = getattr(socket, "TCP_QUICKACK", None)

    def _receive(self, into: memoryview) -> int:
        received = self.connection.recv_into(into)
        if self.quickack is not None:
            self.connection.setsockopt(socket.IPPROTO_TCP, self.quickack, 1)
        return received

    def read(self, length: int) -> bytes:
        """Exactly ``length`` bytes, fewer only if the peer closed the connection."""
        available = self.end - self.start
        if available >= length:
            data = bytes(self.view[self.start : self.start + length])
            self.start += length
            return data
        out = bytearray(length)
        target = memoryview(out)
        target[:available] = self.view[self.start : self.end]
        filled = available
        self.start = self.end = 0
        while filled < length:
            if length - filled >= len(self.buffer):
                received = self._receive(target[filled:])  # large reads skip the buffer
                if not received:
                    return bytes(out[:filled])
                filled += received
                continue
            received = self._receive(self.view)
            if not received:
                return bytes(out[:filled])
            take = min(received, length - filled)
            target[filled : filled + take] = self.view[:take]
            filled += take
            self.start, self.end = take, received
        return bytes(out)


class DicomListener:
    """A storage SCP whose instances go through the ingest pipeline."""

    def __init__(
        self,
        platform: Platform,
        *,
        ae_title: str,
        allowed_calling: Sequence[str],
        site: str,
        options: Options,
        workers: int = 1,
        queue_bytes: int = 1024**3,
        max_associations: int = 16,
    ) -> None:
        problem = check_ae_title(ae_title)
        if problem:
            raise ValueError(f"AE title {ae_title!r}: {problem}")
        self.platform = platform
        self.ae_title = ae_title.strip()
        self.allowed_calling = frozenset(a.strip() for a in allowed_calling if a.strip())
        self.site = site
        self.options = options
        self.workers = workers
        self.received = 0
        self.port = 0
        self.batches: list[service.IngestResult] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._queue_bytes = queue_bytes
        self._queued_bytes = 0
        self._room = threading.Condition()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_associations)
        self._associations: set[_Association] = set()
        self._stopping = threading.Event()
        self._server_socket: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._consumer: threading.Thread | None = None

    # -- receiving -------------------------------------------------------------------------

    def start(self, host: str, port: int) -> None:
        """Start listening in background threads (port 0 picks a free port: see ``port``)."""
        server = socket.create_server((host, port), backlog=32, reuse_port=False)
        server.settimeout(0.2)  # accept() wakes up to notice stop()
        self._server_socket = server
        self.port = server.getsockname()[1]
        self._consumer = threading.Thread(target=self._consume, name="insitu-deid", daemon=True)
        self._consumer.start()
        self._acceptor = threading.Thread(target=self._accept, name="insitu-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        assert self._server_socket is not None  # noqa: S101 - set by start() before this thread
        while not self._stopping.is_set():
            try:
                connection, peer = self._server_socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            association = _Association(self, connection, f"{peer[0]}:{peer[1]}")
            threading.Thread(
                target=association.run, name=f"insitu-assoc-{peer[1]}", daemon=True
            ).start()

    def register(self, association: _Association) -> bool:
        """Claim one of the association slots; False when all are taken."""
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self._associations.add(association)
        return True

    def unregister(self, association: _Association) -> None:
        """Give an association's slot back."""
        with self._lock:
            self._associations.discard(association)
        self._slots.release()

    def accept_instance(self, calling_ae_title: str, data: bytes) -> int:
        """Queue one received instance for de-identification; the C-STORE status to answer."""
        with self._lock:
            number = self.received
            self.received += 1
        item = SourceItem(source=f"c-store:{calling_ae_title}:{number}", data=data)
        size = len(data)
        with self._room:
            # Memory is bounded in bytes, not instances; one instance over the whole budget
            # still goes through once the queue is empty.
            if not self._room.wait_for(
                lambda: self._queued_bytes == 0 or self._queued_bytes + size <= self._queue_bytes,
                timeout=QUEUE_WAIT_SECONDS,
            ):
                with self._lock:
                    self.received -= 1
                return STATUS_OUT_OF_RESOURCES
            self._queued_bytes += size
        self._queue.put(item)
        return STATUS_SUCCESS

    def _taken(self, item: SourceItem) -> SourceItem:
        with self._room:
            self._queued_bytes -= len(item.data or b"")
            self._room.notify_all()
        return item

    # -- de-identifying --------------------------------------------------------------------

    def _items(self) -> Iterator[SourceItem]:
        """Items of one batch: ends after IDLE_SECONDS without new instances."""
        while True:
            try:
                item = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                return
            if item is _STOP:
                self._queue.put(_STOP)
                return
            yield self._taken(item)

    def _consume(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            result = service.ingest(
                self.platform,
                self._chain(self._taken(first)),
                site=self.site,
                options=self.options,
                source_kind="dicom",
                workers=self.workers,
                worker_niceness=10 if self.workers > 1 else 0,
            )
            self.batches.append(result)
            log.info("C-STORE batch %s: %s", result.batch_id, result.report["counts"])

    def _chain(self, first: SourceItem) -> Iterator[SourceItem]:
        yield first
        yield from self._items()

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop accepting, let open associations finish (then abort them), drain the queue."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join()
        if self._server_socket is not None:
            self._server_socket.close()
        deadline = time.monotonic() + grace_seconds
        while self._associations and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            remaining = list(self._associations)
        for association in remaining:
            association.abort()
        self._queue.put(_STOP)
        if self._consumer is not None:
            self._consumer.join()

    def serve(self, host: str, port: int) -> None:
        """Listen until SIGINT or SIGTERM, then drain the queue."""
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        self.start(host, port)
        try:
            stopping.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


class _Association:
    """One TCP connection: association negotiation, then C-STORE and C-ECHO until release."""

    def __init__(self, listener: DicomListener, connection: socket.socket, peer: str) -> None:
        self.listener = listener
        self.connection = connection
        self.peer = peer
        self.calling_ae_title = "?"
        self.contexts: dict[int, ul.ContextDecision] = {}
        self.reader = _SocketReader(connection)
        self.stored = 0
        self._command = bytearray()
        self._command_context = 0
        self._pending: dict[int, bytes] | None = None
        self._dataset: bytearray | None = None

    def run(self) -> None:
        connection = self.connection
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.settimeout(ASSOCIATE_TIMEOUT_SECONDS)
        registered = False
        try:
            request = self._read_associate_request()
            registered = self.listener.register(self)
            if not registered:
                log.warning("association from %s refused: too many open associations", self.peer)
                connection.sendall(ul.encode_associate_busy())
                return
            if not self._negotiate(request):
                return
            connection.settimeout(IDLE_TIMEOUT_SECONDS)
            self._exchange()
        except ul.ProtocolError as exc:
            log.warning("aborting association with %s: %s", self.peer, exc)
            with contextlib.suppress(OSError):
                connection.sendall(ul.encode_abort(exc.reason))
        except _ConnectionClosedError as exc:
            log.warning("association with %s ended: %s", self.peer, exc)
        except OSError as exc:  # timeouts included
            log.warning("association with %s failed: %s", self.peer, exc)
        finally:
            if registered:
                self.listener.unregister(self)
            with contextlib.suppress(OSError):
                connection.close()

    def abort(self) -> None:
        """Abort from another thread (listener shutting down); partial instances are dropped."""
        with contextlib.suppress(OSError):
            self.connection.sendall(ul.encode_abort(ul.AbortReason.NOT_SPECIFIED))
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read(self, length: int) -> bytes:
        data = self.reader.read(length)
        if len(data) != length:
            raise _ConnectionClosedError("connection closed in the middle of a PDU")
        return data

    def _header(self) -> tuple[int, int]:
        header = self.reader.read(6)
        if not header:
            raise _ConnectionClosedError("connection closed without A-RELEASE")
        if len(header) != 6:
            raise _ConnectionClosedError("connection closed in a PDU header")
        return header[0], int.from_bytes(header[2:6], "big")

    def _read_associate_request(self) -> ul.AssociateRequest:
        pdu_type, length = self._header()
        if pdu_type != ul.PduType.ASSOCIATE_RQ:
            raise ul.ProtocolError(
                f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}",
                ul.AbortReason.UNEXPECTED_PDU,
            )
        if length > MAX_ASSOCIATE_LENGTH:
            raise ul.ProtocolError(f"A-ASSOCIATE-RQ of {length} bytes is implausibly long")
        return ul.parse_associate_request(self._read(length))

    def _negotiate(self, request: ul.AssociateRequest) -> bool:
        listener = self.listener
        self.calling_ae_title = request.calling_ae_title
        refusal: tuple[bytes, str] | None = None
        if not request.protocol_version & ul.PROTOCOL_VERSION:
            refusal = (ul.encode_protocol_version_reject(), "protocol version not supported")
        elif request.application_context_name != ul.APPLICATION_CONTEXT_NAME:
            refusal = (
                ul.encode_associate_reject(ul.RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED),
                f"application context {request.application_context_name!r} is not DICOM's",
            )
        elif request.called_ae_title != listener.ae_title:
            refusal = (
                ul.encode_associate_reject(ul.RejectReason.CALLED_AE_NOT_RECOGNIZED),
                f"called AE title {request.called_ae_title!r} is not ours ({listener.ae_title!r})",
            )
        elif request.calling_ae_title not in listener.allowed_calling:
            refusal = (
                ul.encode_associate_reject(ul.RejectReason.CALLING_AE_NOT_RECOGNIZED),
                (
                    f"calling AE title {request.calling_ae_title!r} is not in the allow-list "
                    "(--calling-ae or INSITU_ALLOWED_CALLING_AE_TITLES)"
                ),
            )
        if refusal is not None:
            log.warning("association from %s rejected: %s", self.peer, refusal[1])
            self.connection.sendall(refusal[0])
            return False
        decisions = [ul.negotiate(proposal) for proposal in request.contexts]
        self.contexts = {
            d.context_id: d for d in decisions if d.result == ul.ContextResult.ACCEPTANCE
        }
        self.connection.sendall(
            ul.encode_associate_accept(
                request,
                decisions,
                max_pdu_length=MAX_PDU_LENGTH,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            )
        )
        log.info(
            "association from %s (%s): %d of %d presentation contexts accepted",
            self.peer,
            request.calling_ae_title,
            len(self.contexts),
            len(decisions),
        )
        return True

    def _exchange(self) -> None:
        while True:
            pdu_type, length = self._header()
            if pdu_type == ul.PduType.P_DATA_TF:
                if length > HARD_PDU_LIMIT:
                    raise ul.ProtocolError(
                        f"P-DATA-TF of {length} bytes; we accept at most {MAX_PDU_LENGTH}"
                    )
                self._p_data(self._read(length))
            elif pdu_type == ul.PduType.RELEASE_RQ:
                self._read(length)
                self.connection.sendall(ul.encode_release_response())
                log.info(
                    "association from %s (%s) released after %d instances",
                    self.peer,
                    self.calling_ae_title,
                    self.stored,
                )
                return
            elif pdu_type == ul.PduType.ABORT:
                raise _ConnectionClosedError(f"peer aborted after {self.stored} instances")
            else:
                raise ul.ProtocolError(
                    f"unexpected PDU type 0x{pdu_type:02X} during an association",
                    ul.AbortReason.UNEXPECTED_PDU,
                )

    def _p_data(self, body: bytes) -> None:
        view = memoryview(body)
        position = 0
        end = len(body)
        while position < end:
            if position + 6 > end:
                raise ul.ProtocolError("P-DATA-TF ends inside a PDV header")
            item_length = int.from_bytes(body[position : position + 4], "big")
            stop = position + 4 + item_length
            if item_length < 2 or stop > end:
                raise ul.ProtocolError(f"PDV of length {item_length} does not fit its PDU")
            context_id = body[position + 4]
            header = body[position + 5]
            if context_id not in self.contexts:
                raise ul.ProtocolError(f"PDV on presentation context {context_id}, not accepted")
            fragment = view[position + 6 : stop]
            position = stop
            if header & 0x01:
                self._command_fragment(context_id, fragment, last=bool(header & 0x02))
            else:
                self._dataset_fragment(context_id, fragment, last=bool(header & 0x02))

    def _command_fragment(self, context_id: int, fragment: memoryview, *, last: bool) -> None:
        if self._pending is not None:
            raise ul.ProtocolError("a new command arrived before the previous data set ended")
        self._command += fragment
        if not last:
            return
        elements = ul.parse_command(self._command)
        self._command.clear()
        self._command_context = context_id
        field = ul.command_uint(elements, ul.Tag.COMMAND_FIELD)
        if field == ul.CommandField.C_ECHO_RQ:
            self._respond(ul.CommandField.C_ECHO_RSP, elements, STATUS_SUCCESS)
        elif field == ul.CommandField.C_STORE_RQ:
            if ul.command_uint(elements, ul.Tag.COMMAND_DATA_SET_TYPE) == ul.NO_DATA_SET:
                raise ul.ProtocolError("C-STORE-RQ without a data set")
            self._pending = elements
            self._dataset = bytearray(
                encode_file_meta(
                    ul.command_uid(elements, ul.Tag.AFFECTED_SOP_CLASS_UID),
                    ul.command_uid(elements, ul.Tag.AFFECTED_SOP_INSTANCE_UID),
                    self.contexts[context_id].transfer_syntax,
                    IMPLEMENTATION_CLASS_UID,
                    IMPLEMENTATION_VERSION_NAME,
                )
            )
        else:
            raise ul.ProtocolError(
                f"DIMSE command 0x{field:04X} is not supported here (only C-STORE and C-ECHO)",
                ul.AbortReason.UNRECOGNIZED_PDU_PARAMETER,
            )

    def _dataset_fragment(self, context_id: int, fragment: memoryview, *, last: bool) -> None:
        dataset = self._dataset
        if self._pending is None or dataset is None:
            raise ul.ProtocolError("data set fragment without a C-STORE-RQ")
        if context_id != self._command_context:
            raise ul.ProtocolError("data set on another presentation context than its command")
        dataset += fragment
        if len(dataset) > MAX_MEMBER_BYTES:
            raise ul.ProtocolError(f"instance larger than {MAX_MEMBER_BYTES} bytes")
        if not last:
            return
        elements = self._pending
        self._pending = None
        self._dataset = None
        if not ul.command_uid(elements, ul.Tag.AFFECTED_SOP_INSTANCE_UID):
            status = STATUS_CANNOT_UNDERSTAND
        else:
            status = self.listener.accept_instance(self.calling_ae_title, bytes(dataset))
        if status == STATUS_SUCCESS:
            self.stored += 1
        self._respond(ul.CommandField.C_STORE_RSP, elements, status)

    def _respond(
        self, command_field: ul.CommandField, elements: dict[int, bytes], status: int
    ) -> None:
        command = ul.response(
            command_field,
            message_id=ul.command_uint(elements, ul.Tag.MESSAGE_ID),
            status=status,
            sop_class_uid=ul.command_uid(elements, ul.Tag.AFFECTED_SOP_CLASS_UID),
            sop_instance_uid=ul.command_uid(elements, ul.Tag.AFFECTED_SOP_INSTANCE_UID),
        )
        self.connection.sendall(ul.encode_command_pdu(self._command_context, command))
