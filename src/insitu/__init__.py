"""insitu: in-situ processing of de-identified medical imaging data."""

__version__ = "0.1.0"
