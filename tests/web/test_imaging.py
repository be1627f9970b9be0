"""Server-side rendering: lossy JPEG at quality 90 or less, at most 1024 pixels a side, windows
at least 64 stored units wide, and a fixed keyed pattern, so that no set of renders rebuilds a
slice's stored values (the attack below tries, and fails)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from insitu.web import imaging
from insitu.web.imaging import MAX_EDGE, RenderError, Window, render

KEY = b"deployment-secret"


def _image(stored: np.ndarray[Any, Any], slope: float = 1.0, photometric: str = "MONOCHROME2",
           frames: int = 1) -> Dataset:  # fmt: skip
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, -1024
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = stored.astype(np.int16).tobytes()
    return ds


def _smooth(size: int = 256) -> np.ndarray[Any, Any]:
    """A slice with CT-like smooth structure (JPEG keeps it well: the strongest case)."""
    y, x = np.mgrid[0:size, 0:size]
    return np.asarray(600 + 300 * np.sin(x / 23.0) * np.cos(y / 31.0) + x, dtype=np.int16)


def _grey(jpeg: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(io.BytesIO(jpeg))).astype(np.float64)


def test_renders_are_jpeg_at_quality_90_or_less() -> None:
    ds = _image(_smooth())
    asked_100 = render(ds, key=KEY, digest="a", quality=100).jpeg
    assert asked_100[:3] == b"\xff\xd8\xff"
    assert asked_100 == render(ds, key=KEY, digest="a", quality=90).jpeg
    assert len(render(ds, key=KEY, digest="a", quality=50).jpeg) < len(asked_100)


def test_renders_are_at_most_screen_size() -> None:
    big = _image(np.tile(_smooth(256), (8, 8)))  # 2048 x 2048
    rendered = render(big, key=KEY, digest="b")
    assert (rendered.width, rendered.height) == (MAX_EDGE, MAX_EDGE)
    assert Image.open(io.BytesIO(rendered.jpeg)).size == (MAX_EDGE, MAX_EDGE)
    small = render(big, key=KEY, digest="b", viewport=(300, 200))
    assert (small.width, small.height) == (200, 200)
    huge = render(big, key=KEY, digest="b", viewport=(10_000, 10_000))
    assert huge.width == MAX_EDGE


def test_windows_are_at_least_64_stored_units_wide() -> None:
    ds = _image(_smooth())
    assert render(ds, key=KEY, digest="c", window=Window(40, 1)).window == Window(40, 64)
    steep = _image(_smooth(), slope=2.0)  # 64 stored units are 128 modality units
    assert render(steep, key=KEY, digest="c", window=Window(40, 10)).window == Window(40, 128)
    assert render(ds, key=KEY, digest="c", preset="lung").window == Window(-600, 1500)
    with pytest.raises(RenderError, match="unknown preset"):
        render(ds, key=KEY, digest="c", preset="liver-ish")
    with pytest.raises(RenderError, match="must be positive"):
        render(ds, key=KEY, digest="c", window=Window(40, -5))


def test_monochrome1_is_inverted_and_frames_are_chosen() -> None:
    stored = np.stack([np.full((64, 64), 0), np.full((64, 64), 2000)])
    frames = _image(stored, frames=2)
    dark = _grey(render(frames, key=KEY, digest="d", frame=0, window=Window(0, 1000)).jpeg)
    light = _grey(render(frames, key=KEY, digest="d", frame=1, window=Window(0, 1000)).jpeg)
    assert dark.mean() < 5
    assert light.mean() > 250
    inverted = _image(stored[0], photometric="MONOCHROME1")
    assert _grey(render(inverted, key=KEY, digest="d", window=Window(0, 1000)).jpeg).mean() > 250
    with pytest.raises(RenderError, match="out of range"):
        render(frames, key=KEY, digest="d", frame=2)


def _rebuild(ds: Dataset, stored: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The attack: narrowest windows stepped across the whole range, every render inverted
    where it is not clipped, the estimates averaged and rounded."""
    values = stored.astype(np.float64)
    intercept, width = -1024.0, 64.0
    sums, counts = np.zeros(values.shape), np.zeros(values.shape)
    for center in np.arange(values.min() + intercept, values.max() + intercept + width, 8.0):
        grey = _grey(render(ds, key=KEY, digest="e", window=Window(center, width), quality=90).jpeg)
        inside = (grey > 8) & (grey < 247)
        estimate = (grey / 255 - 0.5) * (width - 1) + center - 0.5 - intercept
        sums[inside] += estimate[inside]
        counts[inside] += 1
    return np.rint(sums / np.maximum(counts, 1))


def test_many_renders_do_not_rebuild_the_stored_values() -> None:
    stored = _smooth()
    rebuilt = _rebuild(_image(stored), stored)
    close = float(np.mean(np.abs(rebuilt - stored) <= 1))
    exact = float(np.mean(rebuilt == stored))
    assert close > 0.95  # the attack is good: nearly every value to within one unit...
    assert exact < 0.5  # ...but not the values themselves
    assert not np.array_equal(rebuilt, stored)


def test_the_attack_would_succeed_without_the_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control that shows the test above can fail."""
    monkeypatch.setattr(imaging, "pattern", lambda _k, _d, _f, shape: np.zeros(shape, np.int32))
    stored = _smooth()
    assert float(np.mean(_rebuild(_image(stored), stored) == stored)) > 0.9


def test_the_pattern_is_fixed_per_instance_and_keyed() -> None:
    first = imaging.pattern(KEY, "f", 0, (8, 8))
    assert np.array_equal(first, imaging.pattern(KEY, "f", 0, (8, 8)))
    assert not np.array_equal(first, imaging.pattern(b"another deployment", "f", 0, (8, 8)))
    assert set(np.unique(first)) <= {-1, 0, 1}
