"""Installing what the module needs into Slicer's Python, and nothing Slicer ships.

Only ``Resources/requirements.txt`` is installed (onnxruntime and filelock); pydicom, highdicom,
numpy and Pillow are used as the running Slicer has them (a test checks the file). The user is asked
first, sees one dialog per failure and is offered a restart after an install. Runs inside Slicer
only (``slicer`` and ``qt`` are imported inside the function).
"""

from __future__ import annotations

import importlib
import inspect
import logging


def ensure_dependencies(requirements: str, parent=None) -> bool:
    """True when onnxruntime can be imported; otherwise ask, install ``requirements``, offer a restart.

    ``requirements`` is Resources/requirements.txt: never a package Slicer ships. Released
    Slicer 5.12 has ``slicer.packaging.pip_ensure`` (which asks, and reports its own failures: no
    second dialog here); older versions get a confirmation here and ``slicer.util.pip_install``.
    """
    import slicer

    try:
        import onnxruntime  # noqa: F401

        return True
    except ImportError:
        pass
    packaging = None
    for name in ("slicer.packaging", "slicer.pydeps"):  # pydeps: the name in some 5.11 previews
        try:
            candidate = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(candidate, "pip_ensure") and hasattr(candidate, "load_requirements"):
            packaging = candidate
            break
    try:
        if packaging is not None:
            options = {"requester": "BUSAssist"}
            if "prompt_restart" in inspect.signature(packaging.pip_ensure).parameters:
                options["prompt_restart"] = False  # one restart prompt, ours, below
            packaging.pip_ensure(packaging.load_requirements(requirements), **options)
        else:
            if not slicer.util.confirmOkCancelDisplay(
                "BUSAssist runs its model with onnxruntime, which is not installed in Slicer's Python.\n\n"
                "Install it now (about 15 MB download)?",
                "BUSAssist - install Python packages",
                parent=parent,
            ):
                return False
            with slicer.util.WaitCursor():
                slicer.util.pip_install(["-r", requirements])
    except Exception as error:  # noqa: BLE001 - declined, or pip failed
        if packaging is not None:  # pip_ensure has shown its own message: one dialog per failure
            logging.warning(f"BUSAssist: onnxruntime not installed ({error})")
        else:
            slicer.util.errorDisplay(
                "Installing onnxruntime failed. Check the network connection, or install it from Slicer's "
                f"Python console with: slicer.util.pip_install('onnxruntime')\n\nDetails: {error}",
                parent=parent,
            )
        return False
    if slicer.util.confirmYesNoDisplay(
        "onnxruntime was installed. Restart Slicer now? (recommended: a package installed into a running "
        "application is only reliable after a restart; your scene will be closed)",
        "BUSAssist - restart Slicer",
        parent=parent,
    ):
        slicer.util.restart()
        return False
    importlib.invalidate_caches()
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        slicer.util.errorDisplay(
            f"onnxruntime was installed but cannot be loaded in this session ({error}). Restart Slicer.",
            parent=parent,
        )
        return False
    return True
