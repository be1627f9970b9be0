"""Manifests and bundle archives: strict validation with the field or file named."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from insitu.tools.manifest import (
    ManifestError,
    check_requirements,
    pack_folder,
    parse_manifest,
    unpack,
)
from tests.tools.bundles import IMAGE, manifest_text

HASH = "--hash=sha256:" + "0" * 64
FILES = {"README.md": b"# x", "requirements.txt": f"numpy==2.0.0 {HASH}\n".encode()}


def test_a_valid_manifest() -> None:
    manifest = parse_manifest(manifest_text(), FILES)
    assert (manifest.name, manifest.version, manifest.kind) == ("summary", "1.0.0", "batch")
    assert manifest.outputs[0].pattern == "summary.csv"
    assert manifest.requirements == "requirements.txt"
    oci = parse_manifest(manifest_text(runtime=f'type = "oci"\nimage = "{IMAGE}"'), FILES)
    assert oci.image == IMAGE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (manifest_text().replace('name = "summary"\n', ""), "name is missing"),
        (manifest_text(version="one"), "version 'one' is not a valid version"),
        (manifest_text(version="1.0.0.dev"), "write the version as '1.0.0.dev0'"),
        (manifest_text(name="Bad_Name"), "name 'Bad_Name' must be"),
        (manifest_text().replace('kind = "batch"', 'kind = "daemon"'), "kind must be one of"),
        (manifest_text().replace("gpu = false", "gpu = true"), "needs a GPU min_flavor"),
        (manifest_text().replace('"summary.csv"', '"../x"'), "relative to /results"),
        (manifest_text(runtime='type = "oci"\nimage = "reg/x:latest"'), "pinned by digest"),
        (manifest_text(runtime='type = "conda"'), "runtime.type must be"),
        (manifest_text(runtime='type = "bundle"\nrequirements = "r.txt"'), "not in the bundle"),
        (manifest_text().replace('readme = "README.md"', 'readme = "NO.md"'), "'NO.md'"),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_manifests_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(text, FILES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"numpy>=2 {HASH}", "not pinned"),
        ("numpy==2.0.0", "no --hash=sha256"),
        (f"--index-url https://evil.example\nnumpy==2.0.0 {HASH}", "option --index-url"),
        (f"-e . {HASH}", "option -e"),
        (f"https://x.example/numpy.whl {HASH}", "not pinned"),
        ("# nothing\n", "lists no requirements"),
    ],
)
def test_requirements_must_be_pinned_with_hashes(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        check_requirements("requirements.txt", text)
    check_requirements("r.txt", f"numpy==2.0.0 \\\n    {HASH} \\\n    {HASH}\nscipy==1.1 {HASH}")


def test_pack_is_deterministic_and_unpack_refuses_escapes(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "insitu-tool.toml").write_text("x")
    (folder / "lib").mkdir()
    (folder / "lib" / "a.py").write_text("a = 1\n")
    first = pack_folder(folder)
    (folder / "lib" / "a.py").touch()  # a new mtime changes nothing
    assert pack_folder(folder) == first
    assert unpack(first) == {"insitu-tool.toml": b"x", "lib/a.py": b"a = 1\n"}
    (folder / "link").symlink_to("/etc/passwd")
    with pytest.raises(ManifestError, match="symbolic link"):
        pack_folder(folder)
    with pytest.raises(ManifestError, match=r"no insitu-tool\.toml"):
        pack_folder(tmp_path)

    def archive(name: str, kind: bytes = tarfile.REGTYPE) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind != tarfile.REGTYPE else ""
            tar.addfile(info, io.BytesIO(b""))
        return buffer.getvalue()

    with pytest.raises(ManifestError, match="points outside"):
        unpack(archive("../evil.py"))
    with pytest.raises(ManifestError, match="points outside"):
        unpack(archive("/etc/cron.d/x"))
    with pytest.raises(ManifestError, match="not a regular file"):
        unpack(archive("x", tarfile.SYMTYPE))
    with pytest.raises(ManifestError, match=r"no insitu-tool\.toml"):
        unpack(archive("other.txt"))
    with pytest.raises(ManifestError, match="not a readable tar"):
        unpack(b"not a tar at all" * 100)
