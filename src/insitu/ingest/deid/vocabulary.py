"""Allow-lists that the deny-by-default rules and the C (clean) action consult.

A deployment can extend them; every list is deliberately short and technical, because an
entry here lets a value through unchanged.
"""

from __future__ import annotations

import re

TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE"})

# Text-VR attributes outside Table E.1-1 that carry equipment or coding facts, not identity.
# Anything else with a text VR that the table does not name is removed.
SAFE_TEXT_KEYWORDS = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "ConvolutionKernel",
        "SequenceName",
        "PulseSequenceName",
        "ReceiveCoilName",
        "TransmitCoilName",
        "CodeValue",
        "LongCodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "ContextGroupVersion",
        "WindowCenterWidthExplanation",
        "RescaleType",
        "LossyImageCompressionMethod",
        "ImplementationVersionName",
        "DeidentificationMethod",
        "ContrastBolusAgent",
        "LUTExplanation",
        "AcquisitionContrast",
        "ApplicationHeaderType",
        "FilterType",
        "FocalSpots",
        "GeneratorPower",
    }
)

# Words a descriptor may consist of for C (clean descriptors) to keep it; numbers always pass.
DESCRIPTOR_VOCABULARY = frozenset(
    """
    AX AXIAL SAG SAGITTAL COR CORONAL TRA TRANSVERSE OBL OBLIQUE ISO 2D 3D MPR MIP MINIP VR
    T1 T2 T1W T2W T2STAR PD PDW FLAIR DWI DTI ADC SWI GRE SE TSE FSE EPI MPRAGE SPACE VIBE STIR
    DIXON FAT SAT FS WATER INPHASE OPPPHASE IN OUT OPP PHASE POST PRE CONTRAST GAD GD C WITH
    WITHOUT W WO CT MR MRI PET SPECT CR DX US MG CHEST ABDOMEN ABD PELVIS HEAD BRAIN NECK SPINE
    CSPINE TSPINE LSPINE LIVER LUNG LUNGS BREAST PROSTATE KNEE THORAX BONE SOFT TISSUE STANDARD
    SHARP SMOOTH LOCALIZER LOC SCOUT TOPOGRAM SURVEY ROUTINE HELICAL SPIRAL ARTERIAL VENOUS
    PORTAL DELAYED NATIVE NONCONTRAST MM THIN THICK RECON DIFFUSION PERFUSION DCE DSC ASL BOLD
    LOW HIGH DOSE LD HD WINDOW MEDIASTINUM SERIES IMAGE IMAGES SLICE SLICES PLANE B BVAL MAP SUB
    SUBTRACTION AND OF THE TO SCAN SEQ SEQUENCE BH FB RESP NAV CARDIAC CINE FIESTA TRUEFISP
    SSFP HASTE SSFSE PROPELLER BLADE DYN DYNAMIC EARLY LATE PHASE1 PHASE2 ITERATIVE IR KERNEL
    LEFT RIGHT LT RT BILATERAL BIL ANGIO CTA MRA TOF PC VENOGRAM DERIVED PRIMARY ORIGINAL
    SECONDARY REFORMAT REFORMATTED
    """.split()
)

_TOKEN_RE = re.compile(r"[A-Z0-9]+")
_NUMERIC_RE = re.compile(r"^\d+(MM|CM|S|MS|KV|MAS|B)?$")

# Retain Safe Private: (private creator, element byte) pairs known to carry no identity.
# PS3.15 Table E.3.10-1 is the model; only a few widely used acquisition parameters here.
SAFE_PRIVATE_ELEMENTS = frozenset(
    {
        ("SIEMENS MR HEADER", 0x08),  # (0019,xx08) CSA image header type
        ("SIEMENS MR HEADER", 0x0B),  # (0019,xx0B) slice measurement duration
        ("SIEMENS MR HEADER", 0x0C),  # (0019,xx0C) diffusion b-value
        ("SIEMENS MR HEADER", 0x0D),  # (0019,xx0D) diffusion directionality
        ("GEMS_ACQU_01", 0x9C),  # (0019,xx9C) pulse sequence name
        ("GEMS_PARM_01", 0x39),  # (0043,xx39) slop integers: b-value
        ("PHILIPS IMAGING DD 001", 0x03),  # (2001,xx03) diffusion b-factor
    }
)


def is_clean_descriptor(value: str) -> bool:
    """Whether every word of a descriptor is on the vocabulary (or is a number)."""
    tokens = _TOKEN_RE.findall(value.upper())
    if not tokens:
        return not value.strip()
    return all(t in DESCRIPTOR_VOCABULARY or _NUMERIC_RE.match(t) for t in tokens)
