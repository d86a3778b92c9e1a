"""Finding the inputs of a batch: folders scanned recursively, DICOMDIRs expanded, series grouped.

Symbolic links are followed for files but a directory is never entered twice (its real path is
remembered), so a symlink loop cannot make the scan run forever. Nothing that is not a regular
file is ever opened (a named pipe would block the scan): such entries, symlink loops, unreadable
files and DICOMDIR members that are missing or point outside the DICOMDIR's folder come out of
``expand_inputs`` as ``InputError`` refusals, so every input ends in results.csv or errors.csv.
Files are ordered by study, series and instance number when they are DICOM, so results and
outputs of one series sit together.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from busassist.core.io import InputError, regular_file_problem
from busassist.core.limits import inflated_size_problem

#: Files found while scanning a folder that are documentation, not images; skipped silently.
NOT_IMAGES = {".json", ".txt", ".md", ".csv", ".xml", ".html", ".pdf", ".py"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def _walk(folder: Path, skip: str | None = None) -> Iterator[Path | InputError]:
    """Files below ``folder`` in sorted order, entering each real directory once (and never ``skip``)."""
    seen: set[str] = {skip} if skip else set()
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
        except OSError as error:
            yield InputError(current, f"folder cannot be listed ({error.__class__.__name__})", "scan")
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


def dicomdir_members(path: Path) -> list[Path | InputError] | None:
    """The image files a DICOMDIR references (or the refusal of each bad reference); None when not a DICOMDIR.

    A member is refused when its Referenced File ID is malformed, resolves outside the DICOMDIR's
    folder (``..``, an absolute path, a link out) or names no file.
    """
    import pydicom

    if regular_file_problem(path) is not None or inflated_size_problem(path) is not None:
        return None
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # not DICOM at all: the reader reports it later
        return None
    if str(getattr(meta, "MediaStorageSOPClassUID", "")) != DICOMDIR_SOP_CLASS:
        return None
    try:
        records = pydicom.dcmread(path).get("DirectoryRecordSequence") or []
    except Exception as error:
        return [InputError(path, f"DICOMDIR unreadable ({error.__class__.__name__})", "scan")]
    root = Path(os.path.realpath(path.parent))
    members: list[Path | InputError] = []
    for number, record in enumerate(records, 1):
        try:
            file_id = record.get("ReferencedFileID")
        except Exception:
            members.append(InputError(path, f"record {number}: malformed Referenced File ID", "scan"))
            continue
        if file_id is None or file_id == "":
            continue  # patient, study and series records reference no file
        parts = [str(part) for part in ([file_id] if isinstance(file_id, str) else file_id)]
        if any(part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part for part in parts):
            members.append(
                InputError(path, f"record {number}: Referenced File ID leaves the DICOMDIR's folder", "scan")
            )
            continue
        member = path.parent.joinpath(*parts)
        real = Path(os.path.realpath(member))
        if root not in real.parents:
            members.append(InputError(path, f"record {number}: member resolves outside the DICOMDIR's folder", "scan"))
            continue
        problem = regular_file_problem(member)
        if problem is not None:
            members.append(InputError(member, f"DICOMDIR member: {problem}", "scan"))
            continue
        members.append(member)
    return members


def expand_inputs(inputs: Iterable[str | Path], exclude: str | Path | None = None) -> Iterator[Path | InputError]:
    """Files named directly, every file below named folders, and the members of DICOMDIRs.

    Hidden files and documentation files (``NOT_IMAGES``) found in folders are skipped; every
    other file is tried, so a DICOM without an extension is still found. Each file once. What
    cannot be an input (a named pipe, a symlink loop, a bad DICOMDIR member) is yielded as its
    ``InputError``, which ``analyze_file`` records like any other refusal. Nothing below ``exclude``
    (the output folder, when it lies inside an input folder) is taken: outputs are not inputs.
    """
    emitted: set[str] = set()
    skip = os.path.realpath(exclude) if exclude is not None else None
    for item in inputs:
        path = Path(item)
        candidates = _walk(path, skip) if os.path.isdir(path) else iter([path])
        for candidate in candidates:
            if isinstance(candidate, InputError):
                yield candidate
                continue
            problem = regular_file_problem(candidate)
            if problem is not None:
                key = os.path.abspath(candidate)
                if key not in emitted:
                    emitted.add(key)
                    yield InputError(candidate, problem, "scan")
                continue
            members = None
            if candidate.name.upper() == "DICOMDIR":
                with warnings.catch_warnings():  # its patient records' values are not ours to print
                    warnings.simplefilter("ignore")
                    members = dicomdir_members(candidate)
            for member in members if members is not None else [candidate]:
                key = os.path.abspath(member.path if isinstance(member, InputError) else member)
                if isinstance(member, InputError):
                    key += "|" + member.reason
                if key not in emitted:
                    emitted.add(key)
                    yield member


def series_order(paths: list[Path | InputError]) -> list[Path | InputError]:
    """Paths ordered by (study, series, instance number) for DICOM; other files and refusals keep their order after."""

    keyed = []
    with warnings.catch_warnings():
        # pydicom's value validation quotes header values; each file's warnings are reported,
        # scrubbed, when the file itself is analysed
        warnings.simplefilter("ignore")
        for position, path in enumerate(paths):
            keyed.append((_series_key(path, position), path))
    return [path for _, path in sorted(keyed, key=lambda item: item[0])]


def study_key(path: Path | InputError) -> str:
    """The Study Instance UID of a DICOM input, "~" for anything else (headers only; warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _series_key(path, 0)[0]


def _series_key(path: Path | InputError, position: int) -> tuple[str, str, int, int]:
    import pydicom

    key = ("~", "~", 0, position)
    if isinstance(path, InputError) or regular_file_problem(path) or inflated_size_problem(path):
        return key
    try:
        header = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber"]
        )
        return (
            str(header.get("StudyInstanceUID", "~")),
            str(header.get("SeriesInstanceUID", "~")),
            int(header.get("InstanceNumber", 0) or 0),
            position,
        )
    except Exception:  # not a readable DICOM or a malformed value: keep it, the reader reports why
        return key
