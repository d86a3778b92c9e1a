"""Command-line options that more than one command offers, defined once."""

from __future__ import annotations

import argparse

from busassist.core.backends import AUTO, BACKEND_CHOICES


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--backend``: the model runtime (``core.backends``), the same words in every command."""
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=AUTO,
        help="model runtime: auto (OpenVINO when installed and it answers like onnxruntime), onnxruntime, openvino",
    )
