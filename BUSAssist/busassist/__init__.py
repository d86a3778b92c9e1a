"""BUSAssist: breast-ultrasound computer-aided diagnosis with EMT-Net.

Public API (imported lazily so that ``import busassist`` stays cheap inside Slicer)::

    from busassist import Analyzer, analyze_file, expand_inputs, prepare_output, read_frames
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Analyzer": "busassist.core.inference",
    "read_frames": "busassist.core.io",
    "analyze_file": "busassist.core.batch",
    "AnalyzeOptions": "busassist.core.batch",
    "prepare_output": "busassist.core.batch",
    "expand_inputs": "busassist.core.scan",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'busassist' has no attribute {name!r}")
