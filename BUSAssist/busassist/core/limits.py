"""A resource budget checked before anything is decoded: headers are not believed about size.

A 3 KB file can declare a 65535 x 65535 frame, in its DICOM header or inside its compressed
stream, and a decoder will allocate whatever it is told. Every frame is therefore checked before
decoding: its declared pixel count against ``max_pixels`` (``--max-pixels``, default
``constants.MAX_PIXELS``), the compressed stream's own header (JPEG, JPEG-LS, JPEG 2000) against
the DICOM header, and the declared number of frames against the bytes the file actually holds.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path

from busassist.constants import MAX_PIXELS, MAX_WHOLE_FILE_BYTES

RLE_LOSSLESS = "1.2.840.10008.1.2.5"
DEFLATED = "1.2.840.10008.1.2.1.99"
#: Start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (C4 = DHT, C8 = JPG, CC = DAC are not) and JPEG-LS SOF55.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
#: Bytes of one encapsulated item header (tag + length): the least a compressed frame costs.
_ITEM_HEADER = 8
#: How much of the first fragment is read to find the stream header.
_HEADER_BYTES = 65536

__all__ = ["MAX_PIXELS", "BudgetError", "check_declared_size", "declared_stream_size", "first_fragment"]


class BudgetError(ValueError):
    """A declared size the reader refuses to allocate; ``str()`` is the one-line reason."""


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG / JPEG-LS stream's start-of-frame segment."""
    if not data.startswith(b"\xff\xd8"):
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _SOF_MARKERS:
            if position + 10 > len(data):
                return None
            rows, columns = struct.unpack(">HH", data[position + 5 : position + 9])
            return rows, columns, data[position + 9]
        if marker == 0xDA or length < 2:  # start of scan before any frame header: not a valid stream
            return None
        position += 2 + length
    return None


def _j2k_size(data: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG 2000 codestream's SIZ segment (also inside JP2 boxes)."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0 or start + 42 > len(data):
        return None
    siz = start + 4  # Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4) XTsiz(4) YTsiz(4) XTOsiz(4) YTOsiz(4) Csiz(2)
    x, y, x0, y0 = struct.unpack(">IIII", data[siz + 4 : siz + 20])
    (components,) = struct.unpack(">H", data[siz + 36 : siz + 38])
    return max(0, y - y0), max(0, x - x0), components


def declared_stream_size(fragment: bytes) -> tuple[int, int, int] | None:
    """The frame size a compressed stream declares in its own header: (rows, columns, samples), or None."""
    return _jpeg_size(fragment) or _j2k_size(fragment)


def first_fragment(path: Path, limit: int = _HEADER_BYTES) -> bytes | None:
    """Up to ``limit`` bytes of the first fragment of an encapsulated Pixel Data, read without loading the rest.

    Returns None where the layout cannot be followed (pydicom 2, an odd item): the decoder's own
    checks and ``max_pixels`` on the DICOM header still apply there.
    """
    try:
        from pydicom.pixels.utils import _array_common  # pydicom 3: positions the file at the pixel data value
    except ImportError:
        return None
    try:
        with open(path, "rb") as handle:
            _array_common(handle, [])
            offset_table = handle.read(_ITEM_HEADER)  # Basic Offset Table item (some writers tag it 0000,0000)
            if len(offset_table) < _ITEM_HEADER:
                return None
            handle.seek(struct.unpack("<I", offset_table[4:])[0], os.SEEK_CUR)
            header = handle.read(_ITEM_HEADER)
            if len(header) < _ITEM_HEADER or header[:4] != b"\xfe\xff\x00\xe0":  # not an item: no fragment
                return None
            return handle.read(min(struct.unpack("<I", header[4:])[0], limit))
    except Exception:  # the decoder will meet and report the same damage
        return None


#: JPEG, JPEG-LS and JPEG 2000 (with HTJ2K): every frame ends with an end-of-image / end-of-codestream
#: marker (FFD9), perhaps followed by a padding byte. Byte stuffing keeps FFD9 out of the coded data.
_EOI_FAMILIES = (
    "1.2.840.10008.1.2.4.5",
    "1.2.840.10008.1.2.4.7",
    "1.2.840.10008.1.2.4.8",
    "1.2.840.10008.1.2.4.9",
    "1.2.840.10008.1.2.4.20",
)
#: How far from a frame's end its end marker may sit (padding bytes after it).
_EOI_WINDOW = 8


def damaged_frames(
    path: Path, dataset, frame_count: int, indices: list[int], max_pixels: int = MAX_PIXELS
) -> dict[int, str]:
    """Selected compressed frames that must not reach the decoder, with the reason for each.

    - A frame whose stream declares another size than the DICOM header, or more than
      ``max_pixels`` (the first frame is checked before anything else by ``check_declared_size``;
      this checks every selected one: decoders allocate what each stream declares).
    - A JPEG, JPEG-LS or JPEG 2000 frame without its end marker: data cut short, which libjpeg
      decodes without a word and fills in.

    Reads the compressed frames once (one in memory at a time); where they cannot be walked, finds
    nothing and leaves the judgement to the decoder.
    """
    if not _transfer_syntax(dataset).startswith(_EOI_FAMILIES) or not indices:
        return {}
    try:
        from pydicom.encaps import generate_frames
        from pydicom.pixels.utils import _array_common
    except ImportError:
        return {}
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    wanted, damaged = set(indices), {}
    try:
        with open(path, "rb") as handle:
            _array_common(handle, [])
            for index, frame in enumerate(generate_frames(handle, number_of_frames=frame_count)):
                if index > max(wanted):
                    break
                if index not in wanted:
                    continue
                declared = declared_stream_size(frame[:_HEADER_BYTES])
                if (
                    declared is not None
                    and declared[0]
                    and (declared[0] * declared[1] > max_pixels or declared[:2] != (rows, columns))
                ):
                    damaged[index] = (
                        f"compressed frame declares {declared[0]} x {declared[1]} pixels, the DICOM header "
                        f"{rows} x {columns} (limit {max_pixels}); refused before decoding"
                    )
                elif b"\xff\xd9" not in frame[-_EOI_WINDOW:]:
                    damaged[index] = "compressed frame cut short (no end-of-image marker); refused"
    except Exception:  # an offset table or item the walker refuses: the decoder path reports it
        return {}
    return damaged


def inflated_size_problem(path: Path, limit: int = MAX_WHOLE_FILE_BYTES) -> str | None:
    """Why a deflated file must not be read (it inflates past ``limit``), or None.

    pydicom inflates a deflated dataset whole, even to read its header, so the bound is checked
    first by inflating into a counter, a megabyte at a time. Other transfer syntaxes: None at once.
    The answer is remembered per file version (path, size, modification time): the scan, the
    redactor and the reader all ask before they read a header.
    """
    try:
        status = os.stat(path)
    except OSError:
        return None  # the reader reports a missing or unreadable file
    return _inflated_size_problem(str(path), status.st_size, status.st_mtime_ns, limit)


@functools.lru_cache(maxsize=4096)
def _inflated_size_problem(path: str, _size: int, _mtime_ns: int, limit: int) -> str | None:
    import zlib

    try:
        from pydicom.filereader import _read_file_meta_info, read_preamble
    except ImportError:
        return None
    try:
        with open(path, "rb") as handle:
            read_preamble(handle, force=True)
            meta = _read_file_meta_info(handle)
            if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
                return None
            inflater, total, step = zlib.decompressobj(-zlib.MAX_WBITS), 0, 1 << 20
            while total <= limit:
                chunk = inflater.unconsumed_tail or handle.read(step)
                if not chunk:
                    return None
                total += len(inflater.decompress(chunk, step))
                if inflater.eof:
                    return None
    except Exception:  # not DICOM, or damaged: the reader reports it
        return None
    return f"deflated data inflates to more than {limit} bytes; refused before reading"


def _transfer_syntax(dataset) -> str:
    return str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ""))


def is_encapsulated(dataset) -> bool:
    """True for compressed transfer syntaxes (JPEG family, JPEG-LS, JPEG 2000, RLE, ...)."""
    syntax = _transfer_syntax(dataset)
    return syntax.startswith("1.2.840.10008.1.2.4.") or syntax == RLE_LOSSLESS


def check_declared_size(path: Path, dataset, frame_count: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse (``BudgetError``) a file whose declared frames would cost more than the budget or than it holds.

    ``dataset`` is the header read with ``stop_before_pixels``; ``frame_count`` its checked Number of Frames.
    """
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    if rows * columns > max_pixels:
        raise BudgetError(f"frame of {rows} x {columns} pixels exceeds the limit of {max_pixels} pixels (--max-pixels)")
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    bits = int(getattr(dataset, "BitsAllocated", 8) or 8)
    if samples not in (1, 3, 4) or bits not in (1, 8, 16, 32, 64):
        raise BudgetError(f"unsupported pixel layout ({samples} samples of {bits} bits)")
    file_size = os.path.getsize(path)
    frame_bytes = (rows * columns * samples * bits + 7) // 8
    if _transfer_syntax(dataset) == DEFLATED:  # inflated and decoded whole: bound the whole
        if frame_count * frame_bytes > MAX_WHOLE_FILE_BYTES:
            raise BudgetError(
                f"deflated file declares {frame_count} frame(s) of {frame_bytes} bytes, over the "
                f"{MAX_WHOLE_FILE_BYTES} bytes a deflated file may inflate to"
            )
        return
    if not is_encapsulated(dataset):
        if frame_count * frame_bytes > file_size:
            raise BudgetError(
                f"declares {frame_count} frame(s) of {frame_bytes} bytes of pixel data "
                f"but the file has only {file_size} bytes"
            )
        return
    if frame_count * _ITEM_HEADER > file_size:
        raise BudgetError(f"declares {frame_count} compressed frames but the file has only {file_size} bytes")
    if _transfer_syntax(dataset) == RLE_LOSSLESS:
        return  # RLE decodes into Rows x Columns x segments, all checked above
    fragment = first_fragment(path)
    declared = declared_stream_size(fragment) if fragment else None
    if declared is None:
        return
    stream_rows, stream_columns, _ = declared
    if stream_rows * stream_columns > max_pixels:
        raise BudgetError(
            f"compressed stream declares {stream_rows} x {stream_columns} pixels, over the limit of "
            f"{max_pixels} pixels (--max-pixels)"
        )
    if (stream_rows, stream_columns) != (rows, columns) and stream_rows != 0:
        raise BudgetError(
            f"compressed stream declares {stream_rows} x {stream_columns} pixels, the DICOM header {rows} x {columns}"
        )
