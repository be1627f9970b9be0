"""Strip text-carrying segments from encapsulated JPEG, JPEG-LS and JPEG 2000 pixel data.

Compressed frames may hold comments (JPEG COM, JPEG 2000 COM) and application segments
(APP1 Exif, APP13 Photoshop IRB, XMP) written by the modality or a PACS: names, dates and
device details. Only what decoding needs is kept: SOF/DHT/DQT/DRI/SOS and the like, APP0 JFIF
(rewritten without its thumbnail) and APP14 Adobe (colour transform). The entropy-coded data is
copied byte for byte, so decoded pixels are identical. Frames are re-encapsulated with a new
Basic Offset Table.
"""

from __future__ import annotations

import itertools
import re
import struct

from pydicom.encaps import encapsulate

_ITEM = b"\xfe\xff\x00\xe0"
_DELIMITER = 0xFFFEE0DD
SEQUENCE_DELIMITATION_ITEM = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
"""(FFFE,E0DD) with length 0: the end of encapsulated pixel data."""
_JPEG_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    }
)
_JPEG_LS_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
_J2K_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.92",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
# The next marker inside entropy-coded data: FF followed by neither a stuffed 00, an RSTn nor
# a fill byte. JPEG-LS stuffs a 0 bit instead, so only bytes with the high bit set are markers.
_NEXT_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_NEXT_LS_MARKER = re.compile(rb"\xff[\x80-\xcf\xd8-\xfe]")
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class PixelDataError(ValueError):
    """Encapsulated pixel data whose segments cannot be walked; the instance is quarantined."""


def strips_segments(transfer_syntax: str) -> bool:
    """Whether pixel data in this transfer syntax is walked for text segments."""
    return (
        transfer_syntax in _JPEG_SYNTAXES
        or transfer_syntax in _JPEG_LS_SYNTAXES
        or (transfer_syntax in _J2K_SYNTAXES)
    )


def strip_encapsulated(
    value: bytes | memoryview, transfer_syntax: str, frames: int
) -> bytes | None:
    """New encapsulated value (items and delimiter) without text segments; None if unchanged.

    ``value`` starts at the Basic Offset Table item and ends after the sequence delimiter.
    """
    data = bytes(value)
    offsets, fragments = _items(data)
    frame_list = _frames(offsets, fragments, frames)
    stripped = [_strip_frame(frame, transfer_syntax) for frame in frame_list]
    if all(new is None for new in stripped):
        return None
    new_frames = [
        new if new is not None else old for new, old in zip(stripped, frame_list, strict=True)
    ]
    return encapsulate(new_frames, fragments_per_frame=1, has_bot=True) + (
        SEQUENCE_DELIMITATION_ITEM
    )


def _items(data: bytes) -> tuple[list[int], list[bytes]]:
    pos = 0
    offsets: list[int] | None = None
    fragments: list[bytes] = []
    while True:
        if pos + 8 > len(data):
            raise PixelDataError("encapsulated pixel data ends before its sequence delimiter")
        group, element, length = struct.unpack_from("<HHL", data, pos)
        pos += 8
        if (group << 16 | element) == _DELIMITER:
            break
        if data[pos - 8 : pos - 4] != _ITEM or pos + length > len(data):
            raise PixelDataError("malformed item in encapsulated pixel data")
        chunk = data[pos : pos + length]
        pos += length
        if offsets is None:
            if length % 4:
                raise PixelDataError("Basic Offset Table length is not a multiple of 4")
            offsets = list(struct.unpack(f"<{length // 4}L", chunk))
        else:
            fragments.append(chunk)
    return offsets or [], fragments


def _frames(offsets: list[int], fragments: list[bytes], frames: int) -> list[bytes]:
    """The frames' codestreams, from the offset table or else from the codestream starts."""
    if frames <= 1 or len(fragments) == 1:
        return [b"".join(fragments)] if frames <= 1 else list(fragments)
    if offsets:
        positions, position = [], 0
        for fragment in fragments:
            positions.append(position)
            position += len(fragment) + 8
        starts = [positions.index(o) for o in offsets if o in positions]
        if len(starts) != len(offsets):
            raise PixelDataError("the Basic Offset Table does not point at fragment starts")
    else:
        starts = [i for i, f in enumerate(fragments) if f[:2] in (b"\xff\xd8", b"\xff\x4f")]
    if len(starts) != frames or (starts and starts[0] != 0):
        raise PixelDataError(f"{len(starts)} codestreams found for {frames} frames")
    bounds = [*starts, len(fragments)]
    return [b"".join(fragments[a:b]) for a, b in itertools.pairwise(bounds)]


def _strip_frame(frame: bytes, transfer_syntax: str) -> bytes | None:
    if transfer_syntax in _J2K_SYNTAXES:
        return _strip_j2k(frame)
    marker = _NEXT_LS_MARKER if transfer_syntax in _JPEG_LS_SYNTAXES else _NEXT_JPEG_MARKER
    return _strip_jpeg(frame, marker)


def _strip_jpeg(frame: bytes, next_marker: re.Pattern[bytes]) -> bytes | None:
    if frame[:2] != b"\xff\xd8":
        raise PixelDataError("a JPEG frame does not start with SOI")
    out = [b"\xff\xd8"]
    pos, changed = 2, False
    while pos < len(frame):
        if frame[pos] != 0xFF:
            raise PixelDataError("a JPEG marker was expected")
        while pos + 1 < len(frame) and frame[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 1 >= len(frame):
            break
        code = frame[pos + 1]
        if code in _STANDALONE:
            out.append(frame[pos : pos + 2])
            pos += 2
        elif code == 0xD9:  # EOI: the frame ends (padding after it is copied as it is)
            out.append(frame[pos:])
            break
        else:
            if pos + 4 > len(frame):
                raise PixelDataError("a JPEG segment is truncated")
            (length,) = struct.unpack_from(">H", frame, pos + 2)
            segment = frame[pos : pos + 2 + length]
            kept = _kept_segment(code, segment)
            changed |= kept is not segment
            if kept is not None:
                out.append(kept)
            pos += 2 + length
            if code == 0xDA:  # SOS: entropy-coded data up to the next real marker
                found = next_marker.search(frame, pos)
                end = found.start() if found else len(frame)
                out.append(frame[pos:end])
                pos = end
    return b"".join(out) if changed else None


def _kept_segment(code: int, segment: bytes) -> bytes | None:
    """The segment as kept (the same object when unchanged), or None when dropped."""
    if code == 0xFE:  # COM
        return None
    if code == 0xE0:
        if segment[4:9] != b"JFIF\x00" or len(segment) < 18:
            return None
        if len(segment) == 18 and segment[16:18] == b"\x00\x00":
            return segment
        # JFIF without its thumbnail (a thumbnail is a picture that could show text).
        return b"\xff\xe0\x00\x10" + segment[4:16] + b"\x00\x00"
    if code == 0xEE and segment[4:9] == b"Adobe" and len(segment) == 16:
        return segment
    if 0xE1 <= code <= 0xEF:
        return None
    return segment


def _j2k_header(frame: bytes, pos: int, stop: int) -> tuple[list[bytes], int, bool]:
    """Marker segments from ``pos`` up to the ``stop`` marker, COM segments left out."""
    kept: list[bytes] = []
    changed = False
    while True:
        if pos + 4 > len(frame):
            raise PixelDataError("a JPEG 2000 header is truncated")
        (code,) = struct.unpack_from(">H", frame, pos)
        if code == stop:
            return kept, pos, changed
        (length,) = struct.unpack_from(">H", frame, pos + 2)
        if code == 0xFF64:  # COM
            changed = True
        else:
            kept.append(frame[pos : pos + 2 + length])
        pos += 2 + length


def _strip_j2k(frame: bytes) -> bytes | None:
    if frame[:2] != b"\xff\x4f":
        raise PixelDataError("a JPEG 2000 frame is not a raw codestream (it starts without SOC)")
    # Main header: marker segments up to the first tile-part (SOT).
    main, pos, changed = _j2k_header(frame, 2, 0xFF90)
    out = [b"\xff\x4f", *main]
    # Tile-parts: SOT, header segments up to SOD, then data; Psot counts from SOT.
    while pos + 2 <= len(frame):
        (code,) = struct.unpack_from(">H", frame, pos)
        if code == 0xFFD9:  # EOC
            out.append(frame[pos:])
            break
        if code != 0xFF90 or pos + 12 > len(frame):
            raise PixelDataError("a JPEG 2000 tile-part was expected")
        (psot,) = struct.unpack_from(">L", frame, pos + 6)
        end = len(frame) if psot == 0 else pos + psot
        sot = bytearray(frame[pos : pos + 12])
        header, cursor, tile_changed = _j2k_header(frame, pos + 12, 0xFF93)
        changed |= tile_changed
        body = frame[cursor:end]
        if psot:
            struct.pack_into(">L", sot, 6, 12 + sum(map(len, header)) + len(body))
        out.extend([bytes(sot), *header, body])
        pos = end
    return b"".join(out) if changed else None
