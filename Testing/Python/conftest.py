"""Shared pytest setup: import ``busassist`` from the source tree and locate the shared data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = REPO_ROOT / "BUSAssist"
if str(PACKAGE_ROOT) not in sys.path:
    sys.path.insert(0, str(PACKAGE_ROOT))

#: Read-only data shared next to the repository (``../shared`` relative to the repository root).
SHARED_DIR = REPO_ROOT / ".." / "shared"

# The trainer takes its data locations from the environment (as `make` sets them); tests that want
# neither unset them with monkeypatch.
if SHARED_DIR.is_dir():
    os.environ.setdefault("BUSASSIST_DATA", "../shared/data/busi")
    os.environ.setdefault("BUSASSIST_PRETRAINED", "../shared/data/pretrained/mobilenet_v1_1.0_224_imagenet_frozen.pb")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder; tests needing it are skipped when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder {SHARED_DIR.resolve()} is absent (expected ../shared next to the repo)")
    return SHARED_DIR
