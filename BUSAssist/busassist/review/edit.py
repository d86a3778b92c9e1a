"""Correcting a mask by hand: brush, eraser, fill holes, reset, with undo and redo (no Qt)."""

from __future__ import annotations

import numpy as np

from busassist.core.mask_runs import label_components

#: Undo steps kept per frame (each a bit-packed copy of the mask).
UNDO_DEPTH = 50


class MaskEditor:
    """One frame's mask under correction; ``model_mask`` is what *Reset* goes back to."""

    def __init__(self, model_mask: np.ndarray, mask: np.ndarray | None = None) -> None:
        self.model_mask = np.asarray(model_mask) > 0
        self.mask = (self.model_mask if mask is None else np.asarray(mask) > 0).copy()
        self._undo: list[tuple[np.ndarray, tuple[int, int]]] = []
        self._redo: list[tuple[np.ndarray, tuple[int, int]]] = []

    @property
    def edited(self) -> bool:
        return not np.array_equal(self.mask, self.model_mask)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def begin_stroke(self) -> None:
        """Call once per brush stroke (mouse press): the whole stroke is one undo step."""
        self._remember(self._undo)
        self._redo.clear()

    def paint(self, row: float, col: float, radius: float, lesion: bool = True) -> None:
        """A disc of ``radius`` pixels at (row, col): lesion (brush) or background (eraser)."""
        height, width = self.mask.shape
        r = max(0.5, float(radius))
        r0, r1 = max(0, int(row - r)), min(height, int(row + r) + 1)
        c0, c1 = max(0, int(col - r)), min(width, int(col + r) + 1)
        if r0 >= r1 or c0 >= c1:
            return
        rows, cols = np.ogrid[r0:r1, c0:c1]
        disc = (rows - row) ** 2 + (cols - col) ** 2 <= r * r
        self.mask[r0:r1, c0:c1][disc] = lesion

    def fill_holes(self) -> None:
        """Background enclosed by lesion becomes lesion (4-connected background reaching no border stays)."""
        self.begin_stroke()
        labels, count = label_components(~self.mask, connectivity=4)
        if count == 0:
            return
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        holes = (labels > 0) & ~np.isin(labels, border)
        self.mask |= holes

    def reset(self) -> None:
        """Back to the model's mask (undoable)."""
        self.begin_stroke()
        self.mask = self.model_mask.copy()

    def undo(self) -> None:
        if self._undo:
            self._remember(self._redo)
            self.mask = self._restore(self._undo.pop())

    def redo(self) -> None:
        if self._redo:
            self._remember(self._undo)
            self.mask = self._restore(self._redo.pop())

    def _remember(self, stack: list) -> None:
        stack.append((np.packbits(self.mask), self.mask.shape))
        del stack[:-UNDO_DEPTH]

    @staticmethod
    def _restore(item: tuple[np.ndarray, tuple[int, int]]) -> np.ndarray:
        bits, shape = item
        return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
