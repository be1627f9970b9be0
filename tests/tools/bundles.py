"""Tool bundles for tests: manifests and archives."""

from __future__ import annotations

from pathlib import Path

from insitu.tools.manifest import pack_folder

IMAGE = "registry.example.org/insitu/summary@sha256:" + "ab" * 32


def manifest_text(
    name: str = "summary",
    version: str = "1.0.0",
    runtime: str = 'type = "bundle"\nrequirements = "requirements.txt"',
    extra: str = "",
) -> str:
    """A valid manifest, with the given runtime table body."""
    return f"""name = "{name}"
version = "{version}"
summary = "Counts series and instances per modality"
license = "Apache-2.0"
kind = "batch"
command = ["/opt/tool/venv/bin/python", "/opt/tool/app/main.py"]
readme = "README.md"
{extra}
[resources]
min_flavor = "no-gpu"
gpu = false

[[outputs]]
pattern = "summary.csv"
type = "text/csv"

[runtime]
{runtime}
"""


def write_bundle(
    folder: Path,
    requirements: str,
    name: str = "summary",
    version: str = "1.0.0",
    readme: str = "# Summary\\n\\nCounts things.\\n",
) -> Path:
    """A bundle folder with a manifest, a README, main.py and the requirements."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "insitu-tool.toml").write_text(manifest_text(name, version))
    (folder / "README.md").write_text(readme.replace("\\n", "\n"))
    (folder / "main.py").write_text("import hello_tool\nprint(hello_tool.greet())\n")
    (folder / "requirements.txt").write_text(requirements + "\n")
    return folder


def oci_bundle(name: str = "summary", version: str = "1.0.0", tmp: Path | None = None) -> bytes:
    """The archive of a tool that runs an OCI image (nothing to build)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        root = Path(folder)
        runtime = f'type = "oci"\nimage = "{IMAGE}"'
        (root / "insitu-tool.toml").write_text(manifest_text(name, version, runtime))
        (root / "README.md").write_text("# An image\n")
        return pack_folder(root)


def record_passing_run(platform: object, name: str, version: str) -> None:
    """The ledger evidence a successful job on synthetic data leaves (``tool.used`` with the
    end state and the tiers), for tests whose subject is the review, not the job."""
    from insitu.db import session_scope
    from insitu.ledger import service as ledger
    from insitu.tools import service as tools

    with session_scope(platform.sessions) as session:  # type: ignore[attr-defined]
        ledger.record(
            session,
            tools.TOOL_USED,
            actor=ledger.HOST_ACTOR,
            subject=f"tool:{name}@{version}",
            payload={"job": 0, "state": "succeeded", "tiers": ["synthetic"]},
        )
