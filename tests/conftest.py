"""Test-wide setup: offscreen Qt, offline everything, and a small synthetic case built once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Qt aborts the whole run without a display unless told to render offscreen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never reach the network: fail fast if anything tries the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Case stores, index and thumbnail caches of the tests never land in the user's own data folder.
os.environ.setdefault("SURGVIEW_DATA", tempfile.mkdtemp(prefix="surgview-tests-"))

import pytest
from hypothesis import settings

from train.synth.generate import SynthConfig, generate

# Property tests draw the same examples on every run (CI must not fail one run in twenty on an example a
# previous run never met); HYPOTHESIS_PROFILE=explore draws new ones, and what it finds becomes an @example.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SMALL_CASE = SynthConfig(cases=1, minutes=1.0, seed=3, width=320, height=180, fps=25, gop=25)


@pytest.fixture(scope="session")
def synth_case(tmp_path_factory) -> tuple[Path, dict]:
    """One 1-minute synthetic case (320x180, 25 fps): its folder and summary."""
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out, SMALL_CASE)


@pytest.fixture(scope="session")
def ontology():
    from engine.ontology import load_ontology

    return load_ontology()
