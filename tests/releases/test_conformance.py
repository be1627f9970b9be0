"""Every release check, built in or a deployment's own, keeps the one contract: a name, and
for any file one finding with that name, a verdict and a reason in words."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from insitu.releases.checks import (
    Check,
    CheckContext,
    Finding,
    Item,
    Run,
    built_in,
    inspector,
    load_extra,
)
from insitu.releases.models import Verdict


def _samples() -> dict[str, bytes]:
    dicom_path = get_testdata_file("CT_small.dcm")
    assert dicom_path is not None
    dicom = Path(dicom_path).read_bytes()
    npy = io.BytesIO()
    np.save(npy, np.arange(12).reshape(3, 4))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("a.txt", "hello")
    return {
        "notes.txt": b"plain words\n",
        "table.csv": b"a,b\n1,2\n",
        "scan.dcm": dicom,
        "array.npy": npy.getvalue(),
        "bundle.zip": archive.getvalue(),
        "empty": b"",
        "noise.bin": bytes(range(256)) * 10,
    }


CHECKS = [*built_in(), *load_extra("tests.releases.plugin:NoSecrets")]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_each_check_gives_one_finding_with_a_reason(check: Check) -> None:
    assert isinstance(check, Check)
    context = CheckContext(declared_outputs=("notes.txt",))
    run = Run(context, inspector(CHECKS, context))
    for name, data in _samples().items():
        item = Item.of_bytes(name, data, depth=0)
        finding = check.check(item, run)
        assert isinstance(finding, Finding)
        assert finding.check == check.name
        assert finding.verdict in set(Verdict)
        assert len(finding.reason) > 5, (check.name, name)


def test_check_names_are_unique() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))


def test_a_bad_extra_check_is_named() -> None:
    with pytest.raises(TypeError, match="has no name and check"):
        load_extra("hashlib:sha256")
