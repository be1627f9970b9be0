"""A generated burned-in text corpus: US fans, XA and CR pictures with and without text.

Text is drawn the way scanners and technologists put it there: names, IDs, dates and
hospital names, in several fonts, sizes, contrasts and positions. Clean pictures carry what
real ones do that is not text (scale ticks, vessels, collimator edges, speckle). Seeded:
the same arguments always give the same images.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansCondensed.ttf",
)
_SOP_CLASSES = {
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}
_NAMES = ("DOE^JANE", "SMITH JOHN", "Garcia, Maria", "JANSSEN^PIETER", "Rossi Lucia", "KAYA T")
_HOSPITALS = ("ST MARY HOSPITAL", "Royal Infirmary", "CLINICA SAN JOSE", "Uni Klinikum Nord")


@dataclass(frozen=True)
class OcrCase:
    """One generated instance and whether text was drawn into its pixels."""

    dataset: Dataset
    has_text: bool
    kind: str
    description: str


def _font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = rng.choice((*_FONT_FILES, "default"))
    path = _FONT_DIR / name
    if name == "default" or not path.exists():
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(path), size)


def _phrase(rng: random.Random) -> str:
    choice = rng.randrange(5)
    if choice == 0:
        return rng.choice(_NAMES)
    if choice == 1:
        return f"ID {rng.randrange(1_000_000, 9_999_999)}"
    if choice == 2:
        return f"{rng.randrange(1940, 2010)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    if choice == 3:
        return rng.choice(_HOSPITALS)
    return f"{rng.choice(_NAMES)}  {rng.randrange(10, 99)}Y"


def _background(kind: str, rng: random.Random, np_rng: np.random.Generator) -> np.ndarray:
    """A float picture in 0..1 with the structures of the modality, no text."""
    if kind == "US":
        rows, columns = 480, 640
        y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
        apex_x, apex_y = columns / 2 + rng.uniform(-20, 20), -40.0
        radius = np.hypot(x - apex_x, y - apex_y)
        angle = np.arctan2(x - apex_x, y - apex_y)
        fan = (radius > 60) & (radius < rows * 0.95) & (np.abs(angle) < rng.uniform(0.55, 0.75))
        # Speckle has a grain of a few pixels: Rayleigh noise, smoothed along the beam.
        speckle = np_rng.rayleigh(0.25, (rows, columns)).astype(np.float32)
        speckle = (speckle + np.roll(speckle, 1, 0) + np.roll(speckle, 1, 1)) / 2.2
        tissue = 0.35 + 0.25 * np.sin(radius / rng.uniform(25, 45)) * np.cos(angle * 3)
        image = np.where(fan, np.clip(speckle * tissue, 0, 1), 0.0)
        # Depth scale ticks on the right of the fan: marks, not text.
        for depth in range(80, rows - 20, 40):
            image[depth : depth + 2, columns - 60 : columns - 50] = 0.8
        return image
    if kind == "XA":
        rows = columns = 512
        y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
        vignette = 1.0 - 0.6 * (np.hypot(x - columns / 2, y - rows / 2) / (rows * 0.75)) ** 2
        image = 0.55 * vignette + np_rng.normal(0, 0.03, (rows, columns))
        for _ in range(rng.randrange(4, 9)):
            # Vessels: dark curved lines of varying width.
            x0, y0 = rng.uniform(0, columns), rng.uniform(0, rows)
            dx, dy = rng.uniform(-1, 1), rng.uniform(-1, 1)
            width = rng.uniform(2, 7)
            for step in range(400):
                cx, cy = int(x0 + dx * step), int(y0 + dy * step + 30 * np.sin(step / 40))
                if not (0 <= cx < columns and 0 <= cy < rows):
                    break
                w = int(width)
                image[max(cy - w, 0) : cy + w, max(cx - w, 0) : cx + w] *= 0.55
        return np.asarray(np.clip(image, 0, 1))
    rows = columns = 1024
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    lungs = np.exp(-(((x - 330) / 170) ** 2 + ((y - 500) / 300) ** 2)) + np.exp(
        -(((x - 700) / 170) ** 2 + ((y - 500) / 300) ** 2)
    )
    image = 0.75 - 0.45 * lungs + 0.08 * np.sin(y / 18) * (lungs > 0.3)
    image += np_rng.normal(0, 0.02, (rows, columns))
    margin = rng.randrange(20, 80)
    # Collimator edges: bright bands at the border.
    image[:margin, :] = image[-margin:, :] = 0.97
    image[:, :margin] = image[:, -margin:] = 0.97
    return np.asarray(np.clip(image, 0, 1))


def _draw_text(image: np.ndarray, rng: random.Random) -> str:
    rows, columns = image.shape
    picture = Image.fromarray((image * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    size = rng.choice((11, 13, 15, 18, 22, 28))
    font = _font(rng, size)
    phrase = _phrase(rng)
    left, top, right, bottom = draw.textbbox((0, 0), phrase, font=font)
    width, height = right - left, bottom - top
    position = rng.choice(("top-left", "top-right", "bottom-left", "bottom-right", "centre"))
    x = 12 if "left" in position else columns - width - 12
    y = 12 if "top" in position else rows - height - 16
    if position == "centre":
        x, y = (columns - width) // 2, (rows - height) // 2
    # Annotations drawn over the picture itself (the fan, the vessels) are drawn to be read:
    # saturated or on a label. Grey ones sit on the plain margins.
    over_image = position == "centre"
    contrast = rng.choice(("high", "label") if over_image else ("high", "medium", "low", "label"))
    if contrast == "label":
        # Dark text on a light label, as on scanned request forms.
        draw.rectangle((x - 6, y - 4, x + width + 6, y + height + 8), fill=235)
        fill = rng.randrange(0, 60)
    else:
        # Burned-in text is meant to be read: it differs from what is behind it by at
        # least a quarter of the range, brighter or darker as the background allows.
        behind = float(np.median(image[max(y, 0) : y + height, max(x, 0) : x + width])) * 255
        delta = {"high": 220, "medium": 140, "low": 90}[contrast]
        fill = int(min(behind + delta, 255) if behind < 128 else max(behind - delta, 0))
    draw.text((x - left, y - top), phrase, fill=fill, font=font)
    image[:] = np.asarray(picture, dtype=np.float32) / 255.0
    return f"{size}px {contrast} {position}"


def _dataset(kind: str, image: np.ndarray, frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(_SOP_CLASSES[kind])
    ds.SOPClassUID = _SOP_CLASSES[kind]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "OCR-PATIENT"
    ds.PatientName = "OCR^PATIENT"
    ds.Modality = kind
    ds.BurnedInAnnotation = "NO"  # the header says clean: only the OCR can tell
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    rows, columns = image.shape[-2:]
    ds.Rows, ds.Columns = rows, columns
    if kind == "CR":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        pixels = (np.asarray(image) * 4095).astype(np.uint16)
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        pixels = (np.asarray(image) * 255).astype(np.uint8)
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    return ds


def generate(count_with_text: int, count_clean: int, seed: int = 15) -> Iterator[OcrCase]:
    """``count_with_text`` text images and ``count_clean`` clean ones, kinds in rotation."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    kinds = ("US", "XA", "CR")
    for index in range(count_with_text + count_clean):
        kind = kinds[index % len(kinds)]
        has_text = index < count_with_text
        image = _background(kind, rng, np_rng)
        description = _draw_text(image, rng) if has_text else "clean"
        yield OcrCase(_dataset(kind, image), has_text, kind, description)


def multiframe(kind: str, frames: int, text_frame: int | None, seed: int = 15) -> Dataset:
    """A multi-frame object whose only text (if any) is on ``text_frame``."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    stack = []
    for index in range(frames):
        image = _background(kind, rng, np_rng)
        if index == text_frame:
            _draw_text(image, rng)
        stack.append(image)
    return _dataset(kind, np.stack(stack), frames)


def clear_text_case(
    kind: str = "US", phrase: str = "DOE^JANE 1961-03-17", seed: int = 3
) -> Dataset:
    """One instance whose header says NO but whose pixels show a large, plain name."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    image = _background(kind, rng, np_rng)
    picture = Image.fromarray((image * 255).astype(np.uint8))
    path = _FONT_DIR / "DejaVuSans.ttf"
    font = ImageFont.truetype(str(path), 24) if path.exists() else ImageFont.load_default(size=24)
    behind = float(np.median(image[10:40, 14:300]))
    # White on a dark margin, black on a bright one (a CR collimator edge).
    ImageDraw.Draw(picture).text((14, 10), phrase, fill=255 if behind < 0.5 else 0, font=font)
    return _dataset(kind, np.asarray(picture, dtype=np.float32) / 255.0)


def clean_case(kind: str = "US", seed: int = 4) -> Dataset:
    """One instance without text in its pixels, header NO."""
    return _dataset(kind, _background(kind, random.Random(seed), np.random.default_rng(seed)))
