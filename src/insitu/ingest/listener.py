"""DICOM C-STORE receiver feeding the same de-identifying ingest as ``insitu ingest``.

Received instances are queued in memory (never spooled to disk: they still carry PHI) and
de-identified by the worker pool in batches; a batch ends after a short idle period. The C-STORE
response is sent once the instance is queued, which keeps a sender's throughput independent
of de-identification. Only configured calling AE titles may associate, and every accepted
connection gets TCP_NODELAY so that small PDUs are not held back by Nagle's algorithm.
"""

from __future__ import annotations

import logging
import queue
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from insitu.core.platform import Platform
from insitu.ingest import service
from insitu.ingest.deid.table import Options
from insitu.ingest.encoder import encode_file_meta
from insitu.ingest.processor import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from insitu.ingest.sources import SourceItem

log = logging.getLogger(__name__)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
IDLE_SECONDS = 1.0
_STOP = object()


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
        queue_size: int = 1024,
    ) -> None:
        self.platform = platform
        self.site = site
        self.options = options
        self.workers = workers
        self.received = 0
        self.batches: list[service.IngestResult] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._consumer: threading.Thread | None = None
        self._server: Any = None
        # pynetdicom's standard handlers log every C-STORE; at thousands per minute that costs
        # more than the transfer. Our own batch log says what arrived.
        _config.LOG_HANDLER_LEVEL = "none"
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.ae.require_calling_aet = [a.strip() for a in allowed_calling if a.strip()]
        self.ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs from the sender

    def _handlers(self) -> Any:
        return [(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, self._on_open)]

    @staticmethod
    def _on_open(event: Any) -> None:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_store(self, event: Any) -> int:
        request = event.request
        try:
            # The received bytes as they are, behind a hand-built file meta: cheaper than
            # pydicom's encoded_dataset(), which re-validates the meta for every instance.
            data = encode_file_meta(
                str(request.AffectedSOPClassUID),
                str(request.AffectedSOPInstanceUID),
                str(event.context.transfer_syntax),
                IMPLEMENTATION_CLASS_UID,
                IMPLEMENTATION_VERSION_NAME,
            ) + bytes(request.DataSet.getvalue())
        except Exception:
            log.exception("could not read a received dataset")
            return 0xC210
        source = f"c-store:{event.assoc.requestor.ae_title}:{self.received}"
        try:
            self._queue.put(SourceItem(source=source, data=data), timeout=60)
        except queue.Full:
            return STATUS_OUT_OF_RESOURCES
        self.received += 1
        return STATUS_SUCCESS

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
            yield item

    def _consume(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items = self._chain(first)
            result = service.ingest(
                self.platform,
                items,
                site=self.site,
                options=self.options,
                source_kind="dicom",
                workers=self.workers,
                worker_niceness=10 if self.workers > 1 else 0,
            )
            self.batches.append(result)
            counts = result.report["counts"]
            log.info("C-STORE batch %s: %s", result.batch_id, counts)

    def _chain(self, first: SourceItem) -> Iterator[SourceItem]:
        yield first
        yield from self._items()

    def start(self, host: str, port: int) -> None:
        """Start listening in background threads."""
        self._consumer = threading.Thread(target=self._consume, name="insitu-cstore", daemon=True)
        self._consumer.start()
        self._server = self.ae.start_server(
            (host, port), block=False, evt_handlers=self._handlers()
        )

    def stop(self) -> None:
        """Stop accepting, then finish de-identifying everything already received."""
        if self._server is not None:
            self._server.shutdown()
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
