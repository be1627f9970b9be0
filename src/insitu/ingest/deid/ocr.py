"""Burned-in text detection: OCR with Debian's tesseract on the rendered pixels.

Only the number of words found is kept, never the words: what the OCR reads may be a name.
The detector is tuned for recall (a missed name leaves the hospital's side; a false alarm
costs a steward one look), and its acceptance figures are measured in ``tests/ingest``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array

# A word counts as text when tesseract is this sure of it and it has this many letters or
# digits: speckle and vessel edges give short, unsure "words"; names, IDs and dates do not.
MIN_CONFIDENCE = 50.0
MIN_WORD_CHARACTERS = 4
# Shorter words (an age, "26Y"; the start of a name) count when tesseract is very sure.
SURE_CONFIDENCE = 88.0
SURE_WORD_CHARACTERS = 3
_TIMEOUT_S = 60
# Text strokes are thinner than this (in image pixels): a grey opening/closing this wide
# removes them, and what it removed is the text, whatever the background does.
_STROKE_WINDOW = 11
# Contrast (of 255) a stroke needs over what is behind it: at least, in noise sigmas, and
# in sigmas of the local texture (the pass that reads text drawn over speckle).
_MIN_STROKE_CONTRAST = 40.0
_HIGH_STROKE_CONTRAST = 100.0
_NOISE_SIGMAS = 5.0
_TEXTURE_SIGMAS = 4.0
_TEXTURE_BLOCK = 16
# Masks are enlarged so that 8-pixel annotation fonts reach tesseract's preferred height;
# large pictures are read as they are, very large ones shrunk so OCR time stays bounded.
_TARGET_MIN_SIDE = 1000
_MAX_SIDE = 2200
_WHITE_BORDER = 24  # tesseract misses text that touches the edge of its input


class OcrUnavailableError(RuntimeError):
    """tesseract is not installed or cannot run: the ingest must not trust headers alone."""


@dataclass(frozen=True)
class TextFinding:
    """What the OCR found in one instance: counts only."""

    words: int
    frames_with_text: int
    frames_sampled: int


def sampled_frames(number_of_frames: int) -> list[int]:
    """Frames read in a multi-frame object: first, middle, last and every 10th."""
    if number_of_frames <= 1:
        return [0]
    chosen = {0, number_of_frames // 2, number_of_frames - 1}
    chosen.update(range(0, number_of_frames, 10))
    return sorted(chosen)


def render(frame: np.ndarray, photometric: str) -> np.ndarray:
    """An 8-bit greyscale picture of one decoded frame, contrast stretched to 0..255."""
    image = frame.astype(np.float32)
    if image.ndim == 3:
        # RGB (pydicom converts YBR): luminance, and the channel spread, so that coloured
        # text on a grey image stands out too.
        luma = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        spread = image.max(axis=2) - image.min(axis=2)
        image = np.maximum(luma, spread)
    elif photometric == "MONOCHROME1":
        image = image.max() - image
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros(image.shape[:2], dtype=np.uint8)
    return ((image - low) * (255.0 / (high - low))).astype(np.uint8)


def _window(image: np.ndarray, size: int, reduce: str) -> np.ndarray:
    """A separable minimum or maximum filter over a ``size`` square."""
    function = np.min if reduce == "min" else np.max
    half = size // 2
    out = np.pad(image, ((half, half), (0, 0)), mode="edge")
    out = function(sliding_window_view(out, size, axis=0), axis=-1)
    out = np.pad(out, ((0, 0), (half, half)), mode="edge")
    filtered: np.ndarray = function(sliding_window_view(out, size, axis=1), axis=-1)
    return filtered


def _texture(grey: np.ndarray) -> np.ndarray:
    """Robust local spread (MAD in sigmas) over blocks: speckle is high, a plain margin low."""
    block = _TEXTURE_BLOCK
    rows, columns = grey.shape
    padded = np.pad(grey, ((0, -rows % block), (0, -columns % block)), mode="edge")
    grid = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block)
    tiles = grid.transpose(0, 2, 1, 3).reshape(grid.shape[0], grid.shape[2], -1)
    median = np.median(tiles, axis=-1, keepdims=True)
    spread = 1.4826 * np.median(np.abs(tiles - median), axis=-1)
    full: np.ndarray = np.repeat(np.repeat(spread, block, axis=0), block, axis=1)
    return full[:rows, :columns]


def stroke_masks(
    image: np.ndarray, contrast: float, texture_sigmas: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Black-on-white pictures of the bright and of the dark thin strokes.

    A white top-hat keeps bright strokes and a black top-hat dark ones, whatever the
    background (grey fluoroscopy, a bright collimator edge, a light label): tesseract's own
    global threshold loses white text on a grey picture.
    """
    grey = image.astype(np.float32)
    noise = 1.4826 * float(np.median(np.abs(np.diff(grey, axis=1)))) / np.sqrt(2.0)
    threshold: float | np.ndarray = max(contrast, _NOISE_SIGMAS * noise)
    if texture_sigmas:
        threshold = np.maximum(threshold, texture_sigmas * _texture(grey))
    k = _STROKE_WINDOW
    opening = _window(_window(grey, k, "min"), k, "max")
    closing = _window(_window(grey, k, "max"), k, "min")
    bright = np.where(grey - opening > threshold, 0, 255).astype(np.uint8)
    dark = np.where(closing - grey > threshold, 0, 255).astype(np.uint8)
    return bright, dark


def _enlarged(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def _scaled(image: np.ndarray) -> np.ndarray:
    rows, columns = image.shape
    factor = 1
    while min(rows, columns) * factor < _TARGET_MIN_SIDE and max(rows, columns) * factor * 2 <= (
        _MAX_SIDE
    ):
        factor *= 2
    if factor > 1:
        return _enlarged(image, factor)
    step = 1
    while max(rows, columns) // step > _MAX_SIDE:
        step += 1
    return image[::step, ::step] if step > 1 else image


def _stacked(first: np.ndarray, second: np.ndarray, axis: int) -> np.ndarray:
    shape = (first.shape[0], 40) if axis == 1 else (40, first.shape[1])
    return np.concatenate((first, np.full(shape, 255, dtype=np.uint8), second), axis=axis)


def reading_passes(image: np.ndarray) -> Iterator[np.ndarray]:
    """The pictures tesseract reads, in order, for one rendered frame (made lazily: a
    frame where an early pass finds text costs no more).

    1. all strokes of at least the minimum contrast, side by side, scaled for small fonts;
    2. and 3. high-contrast strokes only (noise and faint vessel edges gone), bright ones,
       then dark ones, doubled when small;
    4. strokes that stand out from the local texture (text drawn over the speckle of an
       ultrasound fan), doubled up to about 1,000 pixels.
    Each pass reads what the others lose; together they meet the acceptance figures.
    """
    rows, columns = image.shape
    bright, dark = stroke_masks(image, _MIN_STROKE_CONTRAST)
    yield _scaled(_stacked(bright, dark, axis=1))
    # Then each polarity alone: next to each other, one polarity's copy of a word (the gaps
    # between the other's strokes) can make tesseract lose it. High contrast only, so that
    # speckle, read alone, does not become words.
    bright, dark = stroke_masks(image, _HIGH_STROKE_CONTRAST)
    small = 2 if max(rows, columns) <= 700 else 1
    yield _enlarged(bright, small)
    yield _enlarged(dark, small)
    bright, dark = stroke_masks(image, _MIN_STROKE_CONTRAST, _TEXTURE_SIGMAS)
    yield _enlarged(_stacked(bright, dark, axis=0), 2 if max(rows, columns) <= 1100 else 1)


def _pgm(image: np.ndarray) -> bytes:
    bordered = np.pad(image, _WHITE_BORDER, constant_values=255)
    rows, columns = bordered.shape
    return f"P5 {columns} {rows} 255\n".encode() + np.ascontiguousarray(bordered).tobytes()


class TesseractDetector:
    """Finds text in pixels by running ``tesseract`` on each sampled frame."""

    def __init__(self, binary: str = "tesseract") -> None:
        found = shutil.which(binary)
        if found is None:
            raise OcrUnavailableError(
                f"{binary!r} was not found: install Debian's tesseract-ocr and tesseract-ocr-eng "
                "(make run and make test install them), or set INSITU_OCR=off to trust "
                "Burned In Annotation headers"
            )
        self.binary = found
        # One thread each: ingest already runs one worker per core.
        self._env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def words_in(self, image: np.ndarray) -> int:
        """How many confident words the first pass that reads any finds in one 8-bit
        greyscale frame (0: none of the passes read a word)."""
        for picture in reading_passes(image):
            found = self._read(picture)
            if found:
                return found
        return 0

    def _read(self, picture: np.ndarray) -> int:
        try:
            result = subprocess.run(
                [self.binary, "stdin", "stdout", "--psm", "11", "-l", "eng", "tsv"],
                input=_pgm(picture),
                capture_output=True,
                timeout=_TIMEOUT_S,
                env=self._env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OcrUnavailableError(f"tesseract did not finish: {type(exc).__name__}") from None
        if result.returncode != 0:
            raise OcrUnavailableError(f"tesseract failed with exit status {result.returncode}")
        return count_words(result.stdout.decode("utf-8", "replace"))

    def find_text(self, ds: Dataset) -> TextFinding:
        """Decode the sampled frames of ``ds`` (with its pixel data) and count their words."""
        frames = int(ds.get("NumberOfFrames") or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        words = with_text = 0
        sampled = sampled_frames(frames)
        for index in sampled:
            frame = pixel_array(ds, index=index) if frames > 1 else ds.pixel_array
            found = self.words_in(render(np.asarray(frame), photometric))
            words += found
            with_text += found > 0
        return TextFinding(words=words, frames_with_text=with_text, frames_sampled=len(sampled))


def count_words(tsv: str) -> int:
    """Confident words in tesseract's TSV output (level 5 rows)."""
    count = 0
    for line in tsv.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) < 12 or fields[0] != "5":
            continue
        try:
            confidence = float(fields[10])
        except ValueError:
            continue
        letters = sum(char.isalnum() for char in fields[11])
        if (confidence >= MIN_CONFIDENCE and letters >= MIN_WORD_CHARACTERS) or (
            confidence >= SURE_CONFIDENCE and letters >= SURE_WORD_CHARACTERS
        ):
            count += 1
    return count
