"""The fast encoder writes exactly what pydicom's own writer writes, element by element."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from insitu.ingest.encoder import encode_dataset


def _pydicom(ds: Dataset, transfer_syntax: UID) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax.is_little_endian
    fp.is_implicit_VR = transfer_syntax.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientID = "ODD"  # odd length: padded with a space
    ds.StudyInstanceUID = "2.25.123"  # odd length UI: padded with NUL
    ds.SOPInstanceUID = "2.25.1234"
    ds.ImageType = ["DERIVED", "PRIMARY", ""]  # multi-valued, with an empty value
    ds.StudyDate = "20200131"
    ds.StudyTime = "101010.5"
    ds.AccessionNumber = ""
    ds.InstitutionName = "Café"  # not ASCII: left to pydicom and the character set
    ds.PatientName = "DOE^JANE"  # PN: left to pydicom
    ds.ImageComments = "x" * 70001  # too long for a 2-byte length: pydicom's rules (UN)
    ds.AdditionalPatientHistory = "history" * 3
    ds.TextValue = "long text " * 9000  # UT: a long VR
    ds.Rows = 512  # a number: pydicom
    ds.add_new(0x00091010, "LO", "PRIVATE")
    return ds


@pytest.mark.filterwarnings("ignore:The value:UserWarning")
@pytest.mark.parametrize(
    "transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_fast_encoding_matches_pydicom(transfer_syntax: UID) -> None:
    ds = _dataset()
    assert encode_dataset(ds, transfer_syntax) == _pydicom(ds, transfer_syntax)
