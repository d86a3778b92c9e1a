"""Command-line options that more than one command offers, defined once."""

from __future__ import annotations

import argparse

from busassist.core.backends import BACKEND_CHOICES, DEFAULT_BACKEND


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--backend``: the model runtime (``core.backends``), the same words in every command."""
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=DEFAULT_BACKEND,
        help=(
            "model runtime (default %(default)s, the reference the model card was measured on); auto: OpenVINO "
            "when installed, answering like onnxruntime and faster here (scores may then differ in the 6th digit)"
        ),
    )
