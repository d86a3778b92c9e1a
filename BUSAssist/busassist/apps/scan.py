"""Finding the inputs of a batch: folders scanned recursively, DICOMDIRs expanded, series grouped.

Symbolic links are followed for files but a directory is never entered twice (its real path is
remembered), so a symlink loop cannot make the scan run forever. Files are ordered by study,
series and instance number when they are DICOM, so results and outputs of one series sit together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Files found while scanning a folder that are documentation, not images; skipped silently.
NOT_IMAGES = {".json", ".txt", ".md", ".csv", ".xml", ".html", ".pdf", ".py"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def _walk(folder: Path) -> Iterator[Path]:
    """Files below ``folder`` in sorted order, entering each real directory once."""
    seen: set[str] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            real = os.path.realpath(current)
        except OSError:
            continue
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            yield current  # unreadable folder: reported as an error by the reader
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:  # e.g. a symlink loop
                yield path
                continue
            if is_dir:
                subfolders.append(path)
            elif path.suffix.lower() not in NOT_IMAGES:
                yield path
        stack.extend(reversed(subfolders))


def dicomdir_members(path: Path) -> list[Path] | None:
    """The image files a DICOMDIR references, or None when ``path`` is not a DICOMDIR."""
    import pydicom

    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # not DICOM at all: the reader reports it later
        return None
    if str(getattr(meta, "MediaStorageSOPClassUID", "")) != DICOMDIR_SOP_CLASS:
        return None
    from pydicom.fileset import FileSet

    try:
        fileset = FileSet(pydicom.dcmread(path))
    except Exception:
        return []
    return [Path(instance.path) for instance in fileset]


def expand_inputs(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, every file below named folders, and the members of DICOMDIRs.

    Hidden files and documentation files (``NOT_IMAGES``) found in folders are skipped; every
    other file is tried, so a DICOM without an extension is still found. Each file once.
    """
    emitted: set[str] = set()
    for item in inputs:
        path = Path(item)
        candidates = _walk(path) if path.is_dir() else iter([path])
        for candidate in candidates:
            members = dicomdir_members(candidate) if candidate.name.upper() == "DICOMDIR" else None
            for member in members if members is not None else [candidate]:
                key = os.path.abspath(member)
                if key not in emitted:
                    emitted.add(key)
                    yield member


def series_order(paths: list[Path]) -> list[Path]:
    """Paths ordered by (study, series, instance number) for DICOM; other files keep their order after."""
    import pydicom

    keyed = []
    for position, path in enumerate(paths):
        key = ("~", "~", 0, position)
        try:
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber"]
            )
            key = (
                str(header.get("StudyInstanceUID", "~")),
                str(header.get("SeriesInstanceUID", "~")),
                int(header.get("InstanceNumber", 0) or 0),
                position,
            )
        except Exception:  # not a readable DICOM: keep it, the reader reports why
            pass
        keyed.append((key, path))
    return [path for _, path in sorted(keyed, key=lambda item: item[0])]
