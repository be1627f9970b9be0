"""Burned-in text detection: OCR with Debian's tesseract on the rendered pixels.

Only the number of words found is kept, never the words: what the OCR reads may be a name.
The detector is tuned for recall (a missed name leaves the hospital's side; a false alarm
costs a steward one look), and its acceptance figures are measured in ``tests/ingest``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array

# A word counts as text when tesseract is this sure of it and it has this many letters or
# digits: speckle and vessel edges give short, low-confidence "words".
MIN_CONFIDENCE = 55.0
MIN_WORD_CHARACTERS = 3
# Small images are enlarged so that 8-pixel annotation fonts reach tesseract's preferred
# x-height; large ones are shrunk so that OCR time stays bounded.
_TARGET_MIN_SIDE = 1000
_MAX_SIDE = 2200
_TIMEOUT_S = 60
# Text strokes are thinner than this (in image pixels): a grey opening/closing this wide
# removes them, and what it removed is the text, whatever the background does.
_STROKE_WINDOW = 11
# Contrast (of 255) a stroke needs over what is behind it, at least, and in noise sigmas.
_MIN_STROKE_CONTRAST = 40.0
_NOISE_SIGMAS = 5.0


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


def stroke_masks(image: np.ndarray) -> np.ndarray:
    """Black-on-white pictures of the bright and the dark thin strokes, side by side.

    A white top-hat keeps bright strokes and a black top-hat dark ones, whatever the
    background (grey fluoroscopy, a bright collimator edge, a light label): tesseract's
    own global threshold loses white text on a grey picture.
    """
    grey = image.astype(np.float32)
    noise = 1.4826 * float(np.median(np.abs(np.diff(grey, axis=1)))) / np.sqrt(2.0)
    threshold = max(_MIN_STROKE_CONTRAST, _NOISE_SIGMAS * noise)
    k = _STROKE_WINDOW
    opening = _window(_window(grey, k, "min"), k, "max")
    closing = _window(_window(grey, k, "max"), k, "min")
    bright = np.where(grey - opening > threshold, 0, 255).astype(np.uint8)
    dark = np.where(closing - grey > threshold, 0, 255).astype(np.uint8)
    gap = np.full((grey.shape[0], 40), 255, dtype=np.uint8)
    return np.hstack((bright, gap, dark))


def _scaled(image: np.ndarray) -> np.ndarray:
    rows, columns = image.shape
    factor = 1
    while min(rows, columns) * factor < _TARGET_MIN_SIDE and max(rows, columns) * factor * 2 <= (
        _MAX_SIDE
    ):
        factor *= 2
    if factor > 1:
        return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    step = 1
    while max(rows, columns) // step > _MAX_SIDE:
        step += 1
    return image[::step, ::step] if step > 1 else image


def _pgm(image: np.ndarray) -> bytes:
    rows, columns = image.shape
    return f"P5 {columns} {rows} 255\n".encode() + np.ascontiguousarray(image).tobytes()


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
        """How many confident words tesseract reads in one 8-bit greyscale image."""
        try:
            result = subprocess.run(
                [self.binary, "stdin", "stdout", "--psm", "11", "-l", "eng", "tsv"],
                input=_pgm(_scaled(stroke_masks(image))),
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
        if confidence >= MIN_CONFIDENCE and letters >= MIN_WORD_CHARACTERS:
            count += 1
    return count
