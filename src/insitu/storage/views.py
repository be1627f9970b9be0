"""Dataset views: the read-only folder a job or session sees at ``/data/<dataset>``.

A view is built once per released dataset version, into ``<views root>/<name>-v<version>``:
the instances under ``<subject>/<study>/<series>/<instance>.dcm`` plus the documents the
datasets domain writes (manifest, index, clinical data, README). With the local blob store
every instance is a hard link to its blob (no byte is copied; the views root must be on the
store's filesystem); with any other store each blob is downloaded once into the views root,
which is then the shared POSIX cache. A view holds only regular files and folders: no
symbolic link, nothing that names the blob store, nothing of another dataset.

Views are built in a hidden temporary folder and renamed into place, so a view either exists
complete or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from insitu.storage.local import LocalBlobStore
from insitu.storage.protocol import BlobStore, BlobStoreError

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FILE_MODE = 0o444
_DIR_MODE = 0o555


class ViewError(BlobStoreError):
    """A view cannot be built; the message says what to fix."""


def check_relative_path(relative: str) -> str:
    """Refuse anything but plain relative names (no '..', no absolute paths, no odd bytes)."""
    parts = relative.split("/")
    if not parts or any(not _COMPONENT.match(part) or part in {".", ".."} for part in parts):
        raise ViewError(f"unsafe path in a dataset view: {relative[:200]!r}")
    return relative


def view_path(root: Path, view_name: str) -> Path:
    """Where the view of a dataset version lies (it may not be built yet)."""
    return root / check_relative_path(view_name)


def _open_writable(path: Path) -> None:
    # Folders are made read-only once built; deleting their entries needs write access back.
    for folder, _dirs, _files in os.walk(path):
        Path(folder).chmod(0o700)


def _remove_tree(path: Path) -> None:
    _open_writable(path)
    shutil.rmtree(path)


def _link_or_fetch(store: BlobStore) -> Callable[[str, str], None]:
    if isinstance(store, LocalBlobStore):

        def link(digest: str, target: str) -> None:
            try:
                store.link_to(digest, target)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise ViewError(
                        f"cannot hard-link blobs from {store.root} into {Path(target).parent}: "
                        "they are on different filesystems. Set INSITU_VIEWS_ROOT to a folder "
                        "on the blob store's filesystem (views never copy image bytes)"
                    ) from exc
                raise

        return link

    def fetch(digest: str, target: str) -> None:
        data = store.get(digest)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    return fetch


def _plan(building: Path, files: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Check every path and make its folders; (digest, absolute target) per file."""
    made: set[str] = set()
    work: list[tuple[str, str]] = []
    base = str(building)
    for relative, digest in files:
        folder, _, name = relative.rpartition("/")
        if folder not in made:
            check_relative_path(relative)
            Path(base, folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        elif not _COMPONENT.match(name) or name in {".", ".."}:
            raise ViewError(f"unsafe path in a dataset view: {relative[:200]!r}")
        work.append((digest, f"{base}/{relative}"))
    return work


def build_view(
    store: BlobStore,
    root: Path,
    view_name: str,
    files: Iterable[tuple[str, str]],
    documents: Mapping[str, bytes],
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Build a view unless it exists; return its folder.

    ``files`` gives (relative path, blob digest) of every instance; ``documents`` the small
    files written into the view's top folder. ``on_progress`` hears of files placed, in steps.
    """
    final = view_path(root, view_name)
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    building = root / f".building-{view_name}-{secrets.token_hex(6)}"
    building.mkdir()
    place = _link_or_fetch(store)
    step = 1000

    def placed(count: int) -> None:
        if on_progress is not None:
            on_progress(count)

    try:
        work = _plan(building, files)
        if isinstance(store, LocalBlobStore):
            for number, (digest, target) in enumerate(work, 1):
                place(digest, target)
                if number % step == 0:
                    placed(step)
        else:
            with ThreadPoolExecutor(max_workers=8) as pool:
                for number, _ in enumerate(pool.map(lambda item: place(*item), work), 1):
                    if number % step == 0:
                        placed(step)
        placed(len(work) % step)
        for name, content in documents.items():
            document = building / check_relative_path(name)
            document.write_bytes(content)
            document.chmod(_FILE_MODE)
        for folder, _dirs, _files in os.walk(building, topdown=False):
            Path(folder).chmod(_DIR_MODE)
        try:
            building.rename(final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            _remove_tree(building)  # another process finished the same view first
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            _remove_tree(building)
        raise
    return final


def remove_view(root: Path, view_name: str) -> bool:
    """Remove a view (when its dataset version is invalidated); whether one was there."""
    path = view_path(root, view_name)
    if not path.exists():
        return False
    doomed = root / f".removing-{view_name}-{secrets.token_hex(6)}"
    path.rename(doomed)  # gone from its place at once, even if deleting takes a while
    _remove_tree(doomed)
    return True
