"""Dataset views on disk, for every blob store: zero-copy on the local store, materialised once
from S3; read-only; nothing but regular files and folders; atomic; removable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from insitu.storage.local import LocalBlobStore
from insitu.storage.protocol import BlobStore
from insitu.storage.views import ViewError, build_view, check_relative_path, remove_view


def _walk(root: Path) -> list[Path]:
    return [Path(folder) / name for folder, dirs, files in os.walk(root) for name in dirs + files]


def test_view_layout_is_read_only_and_holds_only_its_files(
    store: BlobStore, tmp_path: Path
) -> None:
    blobs = {
        f"S{i}/1.2/1.2.{i}/1.2.{i}.{j}.dcm": store.put(f"dicom {i} {j}".encode())
        for i in range(2)
        for j in range(3)
    }
    other = store.put(b"an instance of another dataset")
    root = tmp_path / "views"
    calls: list[int] = []
    view = build_view(store, root, "lung-v1", blobs.items(), {"README.txt": b"hello"}, calls.append)
    assert view == root / "lung-v1"
    assert sum(calls) == 6
    entries = _walk(view)
    files = sorted(str(p.relative_to(view)) for p in entries if p.is_file())
    assert files == sorted([*blobs, "README.txt"])
    for path in entries:
        mode = path.lstat().st_mode
        assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), path  # no symlink, device, fifo
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    for relative, digest in blobs.items():
        assert (view / relative).read_bytes() == store.get(digest)
    assert all(store.get(other) != p.read_bytes() for p in entries if p.is_file())
    assert [p.name for p in root.iterdir()] == ["lung-v1"]  # no leftovers of the build
    if isinstance(store, LocalBlobStore):  # zero-copy: the same inode as the blob
        for relative, digest in blobs.items():
            assert (view / relative).stat().st_ino == store.path_of(digest).stat().st_ino
        assert str(store.root) not in "".join(str(p) for p in entries)
    # Built once: a second call changes nothing.
    assert build_view(store, root, "lung-v1", [], {}) == view
    assert (view / "README.txt").read_bytes() == b"hello"
    assert remove_view(root, "lung-v1")
    assert not view.exists()
    assert not remove_view(root, "lung-v1")
    assert store.exists(next(iter(blobs.values())))  # removing a view never touches blobs


def test_unsafe_paths_and_missing_blobs_leave_nothing_behind(
    store: BlobStore, tmp_path: Path
) -> None:
    digest = store.put(b"x")
    root = tmp_path / "views"
    for bad in ("../escape.dcm", "/etc/passwd", "a//b.dcm", "a/./b.dcm", ".hidden/x.dcm", ""):
        with pytest.raises(ViewError, match="unsafe path"):
            check_relative_path(bad)
        with pytest.raises(ViewError, match="unsafe path"):
            build_view(store, root, "v", [(bad, digest)], {})
    with pytest.raises(KeyError):
        build_view(store, root, "v", [("a/b.dcm", "0" * 64)], {})
    assert list(root.iterdir()) == []


def test_views_on_another_filesystem_are_refused_with_a_fix(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    store = LocalBlobStore(tmp_path / "blobs")
    digest = store.put(b"x")
    root = Path(os.environ.get("TMPDIR_SHM", str(shm))) / f"insitu-views-{os.getpid()}"
    try:
        with pytest.raises(ViewError, match="INSITU_VIEWS_ROOT"):
            build_view(store, root, "v", [("a/b.dcm", digest)], {})
        assert list(root.iterdir()) == []
    finally:
        if root.exists():
            root.rmdir()
