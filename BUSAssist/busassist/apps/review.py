"""``busassist-review``: BUSAssist Review, a PySide6 desktop reviewer and mask editor (no Slicer, no torch).

The window only draws and wires. What a control does and what the readout says is the presenter's
(``busassist.presenter``, shared with the Slicer panel) over ``review.session.DesktopSession``; the
mask editor, worklist and review log are ``busassist.review``; the numbers are the core's result
model, the same as results.csv. Bad input gets what the batch gets: one line in the status bar and
the log, never a traceback dialog.

    busassist-review Resources/SampleData                 # files or folders
    busassist-review results/sample                       # a batch output folder (its results, no re-run)
    busassist-review --screenshot shot.png Resources/SampleData   # render the window after analysis
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from busassist.apps.options import add_backend_option
from busassist.apps.review_window import build_window, compose
from busassist.review.session import DesktopSession
from busassist.review.verdicts import ReviewLog
from busassist.review.worklist import open_inputs

__all__ = ["build_parser", "build_window", "compose", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busassist-review", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files, folders or batch output folders")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("busassist-review"),
        help="review log and saved masks (default ./busassist-review)",
    )
    parser.add_argument("--reviewer", default=None, help="name in the review log (default: the OS user)")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX model file, or a bundled one by name: fp32 (the default) or int8 (if the release has one)",
    )
    add_backend_option(parser)
    parser.add_argument(
        "--screenshot", type=Path, default=None, help="render the window after analysing the first item"
    )
    parser.add_argument("--probability", action="store_true", help="with --screenshot: show the probability map")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from PySide6 import QtWidgets
    except ImportError:
        print("busassist-review: needs PySide6 (pip install 'busassist[gui]')", file=sys.stderr)
        return 1
    if args.screenshot is not None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import warnings

    # pydicom's and highdicom's value validation quote header values (a name typed into a UID):
    # the reviewer reports what matters in its status bar and log, never raw warnings on the console.
    for module in ("pydicom", "highdicom"):
        warnings.filterwarnings("ignore", module=module)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        log = ReviewLog(args.out, args.reviewer)
    except OSError as error:
        print(f"busassist-review: {args.out}: cannot be written ({error.strerror or error})", file=sys.stderr)
        return 1
    from busassist.core.model_store import ModelError

    try:
        window = build_window(open_inputs(args.paths), DesktopSession(args.model, backend=args.backend), log, args.out)
    except ModelError as error:
        print(f"busassist-review: {error}", file=sys.stderr)
        return 1
    if args.screenshot is None:
        window.show()
        return app.exec()
    window.show()
    for row in range(window.worklist.rowCount()):  # the first readable row, in the worklist's order
        if window.items[window.worklist.item(row, 0).data(0x0100)].readable:  # Qt.UserRole
            window.worklist.selectRow(row)
            window.on_analyze()
            break
    window.show_probability.setChecked(args.probability)
    for _ in range(5):
        app.processEvents()
    return _save_screenshot(window.grab().toImage(), args.screenshot)


def _save_screenshot(image, path: Path) -> int:
    """The window as a PNG of at most 256 colours (a screenshot for the docs stays well under 300 KB)."""
    from PIL import Image

    image = image.convertToFormat(image.Format.Format_RGB888)
    width, height = image.width(), image.height()
    rows = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(height, image.bytesPerLine())
    rgb = rows[:, : 3 * width].reshape(height, width, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(rgb).quantize(256).save(path, optimize=True)
    except OSError as error:
        print(f"busassist-review: could not write {path} ({error.strerror or error})", file=sys.stderr)
        return 1
    print(f"screenshot: {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
