"""``busassist-train`` (and ``python -m busassist.training``): pin the arithmetic, flush subnormals, run the CLI.

The pins (training/reproducible.py) must be in the environment before PyTorch and numpy load, and
only in a process that trains: set as a side effect of importing the CLI module, they leaked into
every process that imported it (a test session, then OpenVINO running its AVX2 kernels there).
"""

from __future__ import annotations

import sys

from busassist.training.reproducible import flush_subnormals, pin_arithmetic


def main() -> int:
    pin_arithmetic()
    flush_subnormals()  # before PyTorch starts its worker threads, so that they inherit it
    from busassist.training.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
