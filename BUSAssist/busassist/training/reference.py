"""The runtime every training-side figure is measured on.

Model cards, reports, comparisons and the int8 rule are computed with onnxruntime, whatever runtime a
user's ``auto`` picks: a card must be reproducible to the last digit on any machine, and OpenVINO's
float32 answers, while within the parity tolerance (``core.backends``), are not bit-identical.
"""

from __future__ import annotations

from busassist.core.backends import ONNXRUNTIME

REFERENCE_RUNTIME = ONNXRUNTIME
