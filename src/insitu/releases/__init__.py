"""Releases: results leave insitu only through automatic checks and human review."""
