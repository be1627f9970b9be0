"""Server-side rendering of DICOM frames for the viewer and WADO-RS: lossy JPEG, never raw.

What a render guarantees, so that no set of renders rebuilds the stored values:
- a window at least ``MIN_WINDOW_STORED`` stored units wide (in modality units: times the
  rescale slope), applied after the modality LUT (and the VOI LUT when no window is asked);
- a fixed pattern of -1, 0 or +1 stored unit (in 2x2 blocks) added to every pixel before the
  LUTs, keyed by the deployment secret and the instance: the same for every render and every
  user, so it cannot be averaged away (invisible at clinical windows);
- 8-bit output, JPEG at quality ``MAX_QUALITY`` or less, at most ``MAX_EDGE`` pixels a side.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array

MIN_WINDOW_STORED = 64
MAX_EDGE = 1024
MAX_QUALITY = 90
DEFAULT_QUALITY = 85
THUMBNAIL_EDGE = 128
PRESETS: dict[str, tuple[float, float]] = {
    # name: (center, width) in Hounsfield units, for CT.
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


class RenderError(ValueError):
    """A render that cannot be made, with the reason."""


@dataclass(frozen=True)
class Window:
    """A linear VOI window in modality units."""

    center: float
    width: float


@dataclass(frozen=True)
class Rendered:
    """A JPEG and how it was made."""

    jpeg: bytes
    window: Window | None
    width: int
    height: int


def frame_count(dataset: Dataset) -> int:
    """Frames in an instance (1 for single-frame images)."""
    return int(getattr(dataset, "NumberOfFrames", 1) or 1)


def pattern(key: bytes, digest: str, frame: int, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """The fixed -1/0/+1 offsets of one frame, in 2x2 blocks: JPEG smooths single-pixel
    noise away (an attack then rebuilt 53 % of a slice exactly), 2x2 blocks survive it."""
    seed = hmac.new(key, f"render:{digest}:{frame}".encode(), hashlib.sha256).digest()
    generator = np.random.default_rng(int.from_bytes(seed[:16], "big"))
    rows, columns = shape[0], shape[1]
    blocks = generator.integers(-1, 2, size=((rows + 1) // 2, (columns + 1) // 2), dtype=np.int32)
    offsets = np.kron(blocks, np.ones((2, 2), dtype=np.int32))[:rows, :columns]
    return offsets.reshape(rows, columns, *([1] * (len(shape) - 2)))


def _slope(dataset: Dataset) -> float:
    return abs(float(getattr(dataset, "RescaleSlope", 1) or 1))


def _first(value: Any) -> float:
    """The first of a multi-valued DICOM number (WindowCenter may hold several)."""
    if hasattr(value, "__len__") and not isinstance(value, str):
        return float(value[0])
    return float(value)


def _default_window(dataset: Dataset, values: np.ndarray[Any, Any]) -> Window:
    center, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if center is not None and width is not None:
        return Window(_first(center), _first(width))
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0))


def choose_window(
    dataset: Dataset,
    values: np.ndarray[Any, Any],
    window: Window | None,
    preset: str | None,
) -> Window:
    """The window a render uses: asked, preset, the instance's own, or the frame's range;
    never narrower than ``MIN_WINDOW_STORED`` stored units."""
    if window is None and preset is not None:
        if preset not in PRESETS:
            raise RenderError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        window = Window(*PRESETS[preset])
    chosen = window or _default_window(dataset, values)
    if chosen.width <= 0:
        raise RenderError("the window width must be positive")
    return Window(chosen.center, max(chosen.width, MIN_WINDOW_STORED * _slope(dataset)))


def _linear(values: np.ndarray[Any, Any], window: Window) -> np.ndarray[Any, Any]:
    # DICOM PS3.3 C.11.2.1.2.1, the "LINEAR" function, to 0..255 (float32: half the work).
    gain = np.float32(255.0 / (window.width - 1))
    offset = np.float32(127.5 - (window.center - 0.5) * 255.0 / (window.width - 1))
    scaled: np.ndarray[Any, Any] = values.astype(np.float32, copy=False) * gain + offset
    grey: np.ndarray[Any, Any] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return grey


def _fit(picture: Image.Image, viewport: tuple[int, int] | None) -> Image.Image:
    bound_w, bound_h = viewport or (MAX_EDGE, MAX_EDGE)
    bound_w, bound_h = min(max(bound_w, 16), MAX_EDGE), min(max(bound_h, 16), MAX_EDGE)
    scale = min(bound_w / picture.width, bound_h / picture.height, 1.0)
    if scale < 1.0:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        return picture.resize(size, Image.Resampling.LANCZOS)
    return picture


@dataclass(frozen=True)
class Prepared:
    """A frame ready to render: its header (no pixel data) and its values with the pattern,
    in modality units (greyscale, float32) or as RGB bytes (colour). Viewers cache these."""

    header: Dataset
    values: np.ndarray[Any, Any]
    colour: bool


def prepare(dataset: Dataset, *, key: bytes, digest: str, frame: int = 0) -> Prepared:
    """Decode one frame (0-based), add the pattern, apply the modality LUT."""
    if "PixelData" not in dataset:
        raise RenderError("the instance has no image")
    if not 0 <= frame < frame_count(dataset):
        raise RenderError(f"frame {frame + 1} is out of range (1..{frame_count(dataset)})")
    stored = pixel_array(dataset, index=frame) if frame_count(dataset) > 1 else dataset.pixel_array
    perturbed = stored.astype(np.int32) + pattern(key, digest, frame, stored.shape)
    header = Dataset()  # the attributes the LUTs read; a copy would share the pixel data
    for element in dataset:
        if element.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            header.add(element)
    if int(getattr(dataset, "SamplesPerPixel", 1) or 1) > 1:  # colour: no window
        return Prepared(header, np.clip(perturbed, 0, 255).astype(np.uint8), colour=True)
    modality = np.asarray(apply_modality_lut(perturbed, dataset), dtype=np.float32)
    return Prepared(header, modality, colour=False)


def render_prepared(
    prepared: Prepared,
    *,
    window: Window | None = None,
    preset: str | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int = DEFAULT_QUALITY,
) -> Rendered:
    """A prepared frame as a JPEG under the rules above."""
    header, used = prepared.header, None
    if prepared.colour:
        picture = Image.fromarray(prepared.values, "RGB")
    else:
        if window is None and preset is None and "VOILUTSequence" in header:
            voi = np.asarray(apply_voi_lut(prepared.values, header), dtype=np.float32)
            low, high = float(voi.min()), float(voi.max())
            floor = MIN_WINDOW_STORED * _slope(header)
            used = Window((low + high) / 2, max(high - low, floor))
            grey = _linear(voi, used)
        else:
            used = choose_window(header, prepared.values, window, preset)
            grey = _linear(prepared.values, used)
        if getattr(header, "PhotometricInterpretation", "") == "MONOCHROME1":
            grey = 255 - grey
        picture = Image.fromarray(grey, "L")
    picture = _fit(picture, viewport)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=min(max(quality, 1), MAX_QUALITY))
    return Rendered(buffer.getvalue(), used, picture.width, picture.height)


def render(
    dataset: Dataset,
    *,
    key: bytes,
    digest: str,
    frame: int = 0,
    window: Window | None = None,
    preset: str | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int = DEFAULT_QUALITY,
) -> Rendered:
    """One frame (0-based) of an instance as a JPEG under the rules above."""
    prepared = prepare(dataset, key=key, digest=digest, frame=frame)
    return render_prepared(prepared, window=window, preset=preset, viewport=viewport,
                           quality=quality)  # fmt: skip


def thumbnail(prepared: Prepared) -> Rendered:
    """A small picture of a prepared frame, in its default window."""
    return render_prepared(prepared, viewport=(THUMBNAIL_EDGE, THUMBNAIL_EDGE), quality=75)
