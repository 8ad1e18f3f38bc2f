"""Locate the static data files shipped in the top-level ``resources`` package."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """Path of a file or folder under ``resources/`` (works for source trees and installs)."""
    return Path(str(files("resources").joinpath(*parts)))
