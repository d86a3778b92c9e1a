"""Fixtures for tests of the Slicer logic on ``slicer-core``: the bundled model and a headless scene.

Register with ``pytest_plugins = ["slicer_fixtures"]`` after ``pytest.importorskip("slicer")``.
"""

from __future__ import annotations

import pytest

from busassist import slicer as sl
from busassist.core.inference import Analyzer
from busassist.core.model_store import ModelError, default_model_path


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    """The bundled model on one thread (a training run may be using the CPU)."""
    try:
        return Analyzer(default_model_path(), threads=1)
    except ModelError as error:
        pytest.skip(f"bundled model unavailable: {error}")


@pytest.fixture()
def headless():
    """A fresh MRML scene with Slicer's application, segmentation and sequence logic."""
    scene = sl.create_headless_scene()
    yield scene
    scene.scene.Clear(1)
