"""The array check: NumPy, NIfTI, NRRD, HDF5 and picture files are opened, and their arrays
compared with the job's datasets' images.

- Refused: an array holding the exact stored values of a dataset frame (any integer type,
  any axis order), or one shaped like the datasets' frames with values in their range (stored
  or modality units, spread over at least a tenth of it, more than 16 distinct values).
- Pictures (PNG, JPEG, …) are always 0-255 after windowing, so their size decides: a
  greyscale picture of a dataset frame's size is refused, a colour one is flagged.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from insitu.releases.checks import PICTURE_TYPES, Finding, ImageKind, Item, Run
from insitu.releases.models import Verdict

MAX_ELEMENTS = 512 * 1024 * 1024
"""Values read out of one file at most; more is refused as too large to check."""
MAX_SLICES = 4096
_INTEGER_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)


class TooLargeError(ValueError):
    """An array too large to be checked."""


def frame_digest(frame: np.ndarray[Any, Any]) -> str:
    """The hash of a frame's values as the checks compare them: C order, little endian."""
    little = frame.astype(frame.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(np.ascontiguousarray(little).tobytes()).hexdigest()


def _arrays_npy(item: Item) -> Iterator[np.ndarray[Any, Any]]:
    with item.open() as handle:
        yield np.load(handle, allow_pickle=False)


def _arrays_nifti(item: Item) -> Iterator[np.ndarray[Any, Any]]:
    import nibabel

    data = item.content()
    size = int.from_bytes(data[:4], "little")
    if size not in (348, 540):
        size = int.from_bytes(data[:4], "big")
    image_class = nibabel.Nifti1Image if size == 348 else nibabel.Nifti2Image
    image = image_class.from_bytes(data)
    yield np.asanyarray(image.dataobj)  # stored values, before the header's scaling
    yield np.asarray(image.get_fdata(dtype=np.float32))


def _arrays_nrrd(item: Item) -> Iterator[np.ndarray[Any, Any]]:
    import nrrd

    with item.open() as handle:
        header = nrrd.read_header(handle)
        if "data file" in header or "datafile" in header:
            raise ValueError(
                "its data lie in a separate file ('data file' field), which is not checked: "
                "write the data inline"
            )
        yield nrrd.read_data(header, handle, None)


def _arrays_hdf5(item: Item) -> Iterator[np.ndarray[Any, Any]]:
    import h5py

    found: list[Any] = []
    with h5py.File(io.BytesIO(item.content()), "r") as handle:
        # visititems does not follow external links; external raw storage is refused below.
        handle.visititems(lambda _name, obj: found.append(obj) if isinstance(obj, h5py.Dataset)
                          else None)  # fmt: skip
        for dataset in found:
            if dataset.external:
                raise ValueError(f"dataset {dataset.name} keeps its data in another file")
            if dataset.dtype.kind not in "biuf" or dataset.size > MAX_ELEMENTS:
                continue
            yield np.asarray(dataset[()])


def _arrays_picture(item: Item) -> Iterator[np.ndarray[Any, Any]]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_ELEMENTS // 4  # larger pictures raise DecompressionBombError
    with Image.open(item.open()) as picture:
        for index in range(getattr(picture, "n_frames", 1)):
            picture.seek(index)
            yield np.asarray(picture.convert("RGB") if picture.mode == "P" else picture)
            if index >= MAX_SLICES:
                break


READERS = {
    "application/x-npy": _arrays_npy,
    "image/x-nifti": _arrays_nifti,
    "image/x-nrrd": _arrays_nrrd,
    "application/x-hdf5": _arrays_hdf5,
    **dict.fromkeys(PICTURE_TYPES, _arrays_picture),
}


def _frames(array: np.ndarray[Any, Any], kind: ImageKind) -> Iterator[np.ndarray[Any, Any]]:
    """The 2-D slices of ``array`` with the kind's frame size, whichever two axes hold it."""
    if array.ndim < 2:
        return
    axes = range(array.ndim)
    for row_axis in axes:
        for column_axis in axes:
            if row_axis == column_axis:
                continue
            if (array.shape[row_axis], array.shape[column_axis]) != (kind.rows, kind.columns):
                continue
            moved = np.moveaxis(array, (row_axis, column_axis), (-2, -1))
            yield from moved.reshape(-1, kind.rows, kind.columns)[:MAX_SLICES]


def _integer_views(frame: np.ndarray[Any, Any]) -> Iterator[np.ndarray[Any, Any]]:
    """The frame in every integer type that holds its values exactly."""
    values = frame
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            return
    elif values.dtype.kind not in "biu":
        return
    low, high = float(values.min()), float(values.max())
    for dtype in _INTEGER_TYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            yield values.astype(dtype)


def _in_range(low: float, high: float, bottom: float, top: float) -> bool:
    span = max(top - bottom, 1.0)
    margin = 0.05 * span
    return bottom - margin <= low and high <= top + margin and (high - low) >= 0.1 * span


def _image_like(frame: np.ndarray[Any, Any], kind: ImageKind) -> bool:
    values = frame[np.isfinite(frame)] if frame.dtype.kind == "f" else frame
    if values.size == 0 or values.dtype.kind not in "biuf":
        return False
    low, high = float(values.min()), float(values.max())
    in_range = _in_range(low, high, kind.stored_min, kind.stored_max) or _in_range(
        low, high, kind.modality_min, kind.modality_max
    )
    return in_range and len(np.unique(values.ravel()[:65536])) > 16


def _greyscale(picture: np.ndarray[Any, Any]) -> bool:
    if picture.ndim == 2:
        return True
    channels = picture[..., :3]
    return bool(np.all(channels == channels[..., :1]))


class ArrayCheck:
    """Refuses arrays and pictures that hold or look like the datasets' images."""

    name = "pixel-arrays"

    def check(self, item: Item, run: Run) -> Finding:
        """Open the file's arrays and compare them with the datasets' frames."""
        reader = READERS.get(item.media_type)
        if reader is None:
            return Finding(self.name, Verdict.passed, "holds no array or picture")
        kinds = run.context.image_kinds
        elements = 0
        flagged = ""
        for array in reader(item):
            elements += array.size
            if elements > MAX_ELEMENTS:
                raise TooLargeError(f"over {MAX_ELEMENTS:,} values")
            if array.dtype.kind not in "biuf":
                continue
            refusal = self._exact(array, run) or self._alike(array, run, item)
            if refusal:
                return Finding(self.name, Verdict.refused, refusal)
            if item.media_type in PICTURE_TYPES:
                flagged = flagged or next(
                    (f"{k.rows}x{k.columns}" for k in kinds
                     if array.shape[:2] == (k.rows, k.columns)), "")  # fmt: skip
        if flagged:
            return Finding(
                self.name,
                Verdict.flagged,
                f"a colour picture the size of the datasets' images ({flagged}): a reviewer "
                "must check that it shows no image",
            )
        return Finding(self.name, Verdict.passed, "no array shaped like the datasets' images")

    @staticmethod
    def _exact(array: np.ndarray[Any, Any], run: Run) -> str:
        for kind in run.context.image_kinds:
            for frame in _frames(array, kind):
                views = _integer_views(frame)
                if any(frame_digest(v) in run.context.pixel_digests for v in views):
                    return (
                        f"holds the exact pixel values of a {kind.rows}x{kind.columns} image "
                        "of the job's datasets: pixel data never leave"
                    )
        return ""

    @staticmethod
    def _alike(array: np.ndarray[Any, Any], run: Run, item: Item) -> str:
        for kind in run.context.image_kinds:
            size = f"{kind.rows}x{kind.columns}"
            if item.media_type in PICTURE_TYPES:
                if array.shape[:2] == (kind.rows, kind.columns) and _greyscale(array):
                    return (
                        f"is a greyscale picture the size of the datasets' images ({size}): "
                        "release plots, or pictures downscaled and annotated, instead"
                    )
                continue
            if any(_image_like(frame, kind) for frame in _frames(array, kind)):
                return (
                    f"holds a {size} array with values in the range of the datasets' images: "
                    "it looks like image data, which never leave; release features or "
                    "predictions instead"
                )
        return ""
