"""Pieces every ``busassist-train`` command module shares: the one-line usage error, where the data are
(an option or an environment variable, never this checkout's neighbours) and the two shapes of a verb that
works on a run folder or on an exported model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: Where the data are comes from the command line or the environment, never from this checkout's
#: neighbours: ``--data`` or ``BUSASSIST_DATA`` (the BUSI folder), ``--pretrained`` or
#: ``BUSASSIST_PRETRAINED`` (the ImageNet MobileNetV1 frozen graph). The Makefile sets both to ../shared.
DATA_VARIABLE = "BUSASSIST_DATA"
PRETRAINED_VARIABLE = "BUSASSIST_PRETRAINED"


def from_environment(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip()
    return Path(value) if value else None


class UsageError(Exception):
    """A command-line problem reported in one line."""


def run_command(subparsers, name: str, help_text: str, handler, data: bool = True) -> argparse.ArgumentParser:
    """A verb that works on one finished run folder (and, with ``data``, on the BUSI folder)."""
    parser = subparsers.add_parser(name, help=help_text)
    parser.add_argument("run", type=Path)
    if data:
        parser.add_argument("--data", type=Path, default=from_environment(DATA_VARIABLE))
    parser.set_defaults(handler=handler)
    return parser


def model_command(subparsers, name: str, help_text: str, handler, made: str) -> argparse.ArgumentParser:
    """A tool that reads an exported model (the exporter's graph) and writes a new one with the recipe's split."""
    parser = subparsers.add_parser(name, help=help_text)
    parser.add_argument("model", type=Path, help="an exported model in the exporter's graph form (not the fast form)")
    parser.add_argument("--out", type=Path, required=True, help=f"folder for emtnet.onnx ({made}) and split.json")
    parser.add_argument("--data", type=Path, default=from_environment(DATA_VARIABLE))
    parser.set_defaults(handler=handler)
    return parser
