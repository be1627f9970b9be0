"""Word lists behind the value rules: descriptors (the C action, Clean Descriptors) and
equipment text (the allow-list's ``technical`` rule).

Every list is deliberately short and technical, because a word here lets a value through.
Words are compared upper-cased; tokens are Unicode words, so a name in any script is a word
that is not on the list.
"""

from __future__ import annotations

import re

# Words a descriptor may consist of for C (clean descriptors) to keep it; numbers always pass.
DESCRIPTOR_VOCABULARY = frozenset(
    [
        "AX",
        "AXIAL",
        "SAG",
        "SAGITTAL",
        "COR",
        "CORONAL",
        "TRA",
        "TRANSVERSE",
        "OBL",
        "OBLIQUE",
        "ISO",
        "2D",
        "3D",
        "MPR",
        "MIP",
        "MINIP",
        "VR",
        "T1",
        "T2",
        "T1W",
        "T2W",
        "T2STAR",
        "PD",
        "PDW",
        "FLAIR",
        "DWI",
        "DTI",
        "ADC",
        "SWI",
        "GRE",
        "SE",
        "TSE",
        "FSE",
        "EPI",
        "MPRAGE",
        "SPACE",
        "VIBE",
        "STIR",
        "DIXON",
        "FAT",
        "SAT",
        "FS",
        "WATER",
        "INPHASE",
        "OPPPHASE",
        "IN",
        "OUT",
        "OPP",
        "PHASE",
        "POST",
        "PRE",
        "CONTRAST",
        "GAD",
        "GD",
        "C",
        "WITH",
        "WITHOUT",
        "W",
        "WO",
        "CT",
        "MR",
        "MRI",
        "PET",
        "SPECT",
        "CR",
        "DX",
        "US",
        "MG",
        "CHEST",
        "ABDOMEN",
        "ABD",
        "PELVIS",
        "HEAD",
        "BRAIN",
        "NECK",
        "SPINE",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "LIVER",
        "LUNG",
        "LUNGS",
        "BREAST",
        "PROSTATE",
        "KNEE",
        "THORAX",
        "BONE",
        "SOFT",
        "TISSUE",
        "STANDARD",
        "SHARP",
        "SMOOTH",
        "LOCALIZER",
        "LOC",
        "SCOUT",
        "TOPOGRAM",
        "SURVEY",
        "ROUTINE",
        "HELICAL",
        "SPIRAL",
        "ARTERIAL",
        "VENOUS",
        "PORTAL",
        "DELAYED",
        "NATIVE",
        "NONCONTRAST",
        "MM",
        "THIN",
        "THICK",
        "RECON",
        "DIFFUSION",
        "PERFUSION",
        "DCE",
        "DSC",
        "ASL",
        "BOLD",
        "LOW",
        "HIGH",
        "DOSE",
        "LD",
        "HD",
        "WINDOW",
        "MEDIASTINUM",
        "SERIES",
        "IMAGE",
        "IMAGES",
        "SLICE",
        "SLICES",
        "PLANE",
        "B",
        "BVAL",
        "MAP",
        "SUB",
        "SUBTRACTION",
        "AND",
        "OF",
        "THE",
        "TO",
        "SCAN",
        "SEQ",
        "SEQUENCE",
        "BH",
        "FB",
        "RESP",
        "NAV",
        "CARDIAC",
        "CINE",
        "FIESTA",
        "TRUEFISP",
        "SSFP",
        "HASTE",
        "SSFSE",
        "PROPELLER",
        "BLADE",
        "DYN",
        "DYNAMIC",
        "EARLY",
        "LATE",
        "PHASE1",
        "PHASE2",
        "ITERATIVE",
        "IR",
        "KERNEL",
        "LEFT",
        "RIGHT",
        "LT",
        "RT",
        "BILATERAL",
        "BIL",
        "ANGIO",
        "CTA",
        "MRA",
        "TOF",
        "PC",
        "VENOGRAM",
        "DERIVED",
        "PRIMARY",
        "ORIGINAL",
        "SECONDARY",
        "REFORMAT",
        "REFORMATTED",
    ]
)

# Extra words equipment text (models, software, kernels, coils, filters) may hold.
TECHNICAL_VOCABULARY = DESCRIPTOR_VOCABULARY | frozenset(
    """
    SOMATOM DEFINITION FLASH FORCE DRIVE EDGE SENSATION EMOTION PERSPECTIVE SCOPE GO NAEOTOM
    ALPHA MAGNETOM SKYRA PRISMA AVANTO AERA VIDA TRIO VERIO ESPREE SOLA ALTEA SYMPHONY HARMONY
    BIOGRAPH SYNGO NUMARIS DISCOVERY OPTIMA REVOLUTION LIGHTSPEED SIGNA HDXT PREMIER ARCHITECT
    PIONEER EXCITE GENESIS BRIGHTSPEED EXPLORER INGENIA ACHIEVA INTERA PANORAMA BRILLIANCE ICT
    IQON SPECTRAL INCISIVE AQUILION ONE PRIME LIGHTNING VANTAGE TITAN ORIAN GALAN ELAN GENESIS
    ECHELON OASIS SCENARIA SUPRIA UMR UCT DIGITAL VEREOS VISTA SELENIA DIMENSIONS LORAD
    MAMMOMAT REVELATION INSPIRATION SENOGRAPHE PRISTINA AMULET INNOVITY LOGIQ VOLUSON VIVID
    EPIQ AFFINITI ACUSON SEQUOIA JUNIPER REDWOOD APLIO XARIO ARIETTA RESONA MYLAB ALLURA AZURION
    ARTIS ZEE ICONO INNOVA OPTIMUS MOBILETT YSIO YSIO LUMINOS MULTIX AXIOM DRX CARESTREAM
    FCR PROFECT VELOCITY DEFINIUM FLUOROSPOT QUANTUM INFINIA INTEVO SYMBIA MILLENNIUM OMNI
    BODY HEADNECK SPINE TORSO FLEX ARRAY COIL QUAD PHASED LARGE SMALL MEDIUM EXTRA WRIST FOOT
    ANKLE SHOULDER KNEE BREAST ENDORECTAL CARDIAC NEURO VASCULAR TXRX TX RX CHANNEL CH
    STANDARD SOFT DETAIL SHARP SMOOTH SUPER ULTRA PLUS EDGE LUNG BONE CHEST FILTER FLAT WEDGE
    BOWTIE COPPER ALUMINUM ALUMINIUM MOLYBDENUM RHODIUM TUNGSTEN SILVER NONE MULTIPLE BODYFILTER
    HEADFILTER VERSION VER REV BUILD RELEASE SP PATCH SOFTWARE DICOM LINUX WINDOWS SERVICE PACK
    FFT RECON DE DUAL ENERGY SPECTRUM DIRECT IR ADMIRE SAFIRE ASIR ASIRV VEO IMR IDOSE AIDR
    FIRST DLIR TRUEFIDELITY PRECISE ACS IDEAL FLOAT AS XT XP EVO NX HDE ES SE ST
    """.split()
)

_WORD_RE = re.compile(r"[^\W_]+")
_DIGIT_RUN_RE = re.compile(r"\d+")
_NUMERIC_RE = re.compile(r"^\d{1,4}(MM|CM|S|MS|KV|MAS|B)?$")
MAX_DIGIT_RUN = 6
"""Longer digit runs (phone numbers, dates, record numbers) fail the technical rule."""

def is_clean_descriptor(value: str) -> bool:
    """Whether every word of a descriptor is on the vocabulary or a short number (≤ 4 digits)."""
    words = _WORD_RE.findall(value.upper())
    if not words:
        return not value.strip()
    return all(w in DESCRIPTOR_VOCABULARY or _NUMERIC_RE.match(w) for w in words)


def is_technical(value: str, limit: int = 64) -> bool:
    """Whether equipment text holds only technical words: each word is on the technical
    vocabulary or carries a digit, and no digit run is longer than ``MAX_DIGIT_RUN``."""
    if len(value) > limit or not value.isascii():
        return False
    for word in _WORD_RE.findall(value.upper()):
        if any(len(run) > MAX_DIGIT_RUN for run in _DIGIT_RUN_RE.findall(word)):
            return False
        if not any(c.isdigit() for c in word) and word not in TECHNICAL_VOCABULARY:
            return False
    return True
