"""The BUSI data set: discovery, mask merging, the leak-free split and a preprocessed cache.

Layout (../shared/data/busi/README.md): ``<class>/images/<class> (n).png`` with masks
``<class>/mask/<class> (n)_mask[_k].png``; all masks of one image are merged (union).
Labels: benign 0, malignant 1. ``normal`` images are kept: they train the segmentation
branch with an empty mask (so the model learns to say "no lesion") and carry no
classification loss, since they are neither benign nor malignant tumours.

The split is 70/15/15, stratified by class, seed 42, and every near-duplicate group from
``near_duplicates.json`` lands whole on one side, otherwise test figures would be leaked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from busassist.constants import CLASS_LABELS, IMAGE_SIZE, SPLIT_FRACTIONS, SPLIT_SEED
from busassist.core.preprocessing import square_image, square_mask

CLASSES = ("benign", "malignant", "normal")
NO_LABEL = -1
_IMAGE_NAME = re.compile(r"^(?P<cls>benign|malignant|normal) \((?P<n>\d+)\)\.png$")
#: Bump when the cached arrays would change (preprocessing or mask merging).
CACHE_VERSION = 1


@dataclass(frozen=True)
class BusiCase:
    """One image with its merged-mask files; ``label`` is -1 for ``normal``."""

    key: str  # "benign/images/benign (1).png", as in near_duplicates.json
    image_path: Path
    mask_paths: tuple[Path, ...]
    category: str

    @property
    def label(self) -> int:
        return CLASS_LABELS.get(self.category, NO_LABEL)


def discover(root: Path, key_prefix: str = "", require_all_classes: bool = True) -> list[BusiCase]:
    """List every BUSI image under ``root`` with its mask files, in a stable order.

    ``key_prefix`` keeps the keys of an extra folder (e.g. corrections exported from Slicer) apart
    from BUSI's own; such folders may lack some class folders (``require_all_classes=False``).
    """
    root = Path(root)
    cases = []
    for category in CLASSES:
        image_dir = root / category / "images"
        if not image_dir.is_dir():
            if not require_all_classes:
                continue
            raise FileNotFoundError(f"{image_dir}: BUSI class folder missing")
        for image_path in sorted(image_dir.iterdir()):
            match = _IMAGE_NAME.match(image_path.name)
            if not match:
                continue
            stem = image_path.stem
            mask_dir = root / category / "mask"
            masks = sorted(mask_dir.glob(f"{glob_escape(stem)}_mask*.png"))
            masks = [m for m in masks if re.fullmatch(re.escape(stem) + r"_mask(_\d+)?\.png", m.name)]
            if not masks:
                raise FileNotFoundError(f"{image_path}: no mask file")
            key = f"{key_prefix}{category}/images/{image_path.name}"
            cases.append(BusiCase(key, image_path, tuple(masks), category))
    if not cases:
        raise FileNotFoundError(f"{root}: no BUSI images found")
    return cases


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def load_image(case: BusiCase) -> np.ndarray:
    """The image as stored (grey or RGB uint8)."""
    with Image.open(case.image_path) as image:
        return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)


def load_mask(case: BusiCase, shape: tuple[int, int]) -> np.ndarray:
    """Union of all mask files of the case as a bool array of the image's shape."""
    merged = np.zeros(shape, dtype=bool)
    for path in case.mask_paths:
        with Image.open(path) as image:
            mask = np.asarray(image.convert("L")) > 0
        if mask.shape != shape:
            raise ValueError(f"{path}: mask {mask.shape} does not match image {shape}")
        merged |= mask
    return merged


def near_duplicate_groups(path: Path | None) -> list[list[str]]:
    if path is None or not Path(path).exists():
        return []
    return json.loads(Path(path).read_text())["groups"]


def split_units(cases: list[BusiCase], groups: list[list[str]]) -> list[list[int]]:
    """Indices of cases grouped into units that must stay together (union of overlapping groups)."""
    index = {case.key: i for i, case in enumerate(cases)}
    parent = list(range(len(cases)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for group in groups:
        members = [index[k] for k in group if k in index]
        for other in members[1:]:
            parent[find(other)] = find(members[0])
    units: dict[int, list[int]] = {}
    for i in range(len(cases)):
        units.setdefault(find(i), []).append(i)
    return sorted(units.values())


def _unit_class(cases: list[BusiCase], unit: list[int]) -> str:
    """Stratum of a unit: its most frequent category, malignant winning ties (rarest class)."""
    counts = {c: sum(cases[i].category == c for i in unit) for c in CLASSES}
    return max(("malignant", "benign", "normal"), key=lambda c: counts[c])


def split_seed(settings: dict) -> int:
    """The seed that draws a training's split: the fixed 70/15/15 split always uses ``SPLIT_SEED``; only a
    K-fold run's folds follow its training seed. ``settings``: a run's training settings (``seed``, ``folds``).
    (Exports before 2026-12-01 wrote the training seed either way.) A K-fold student's teachers carry the
    student's as ``partition_seed``, so that they train inside its training split, never on its test part."""
    if not settings.get("folds"):
        return SPLIT_SEED
    partition = settings.get("partition_seed")
    return int(settings["seed"] if partition is None else partition)


def stratified_group_split(
    cases: list[BusiCase],
    groups: list[list[str]],
    fractions: tuple[float, ...] = SPLIT_FRACTIONS,
    seed: int = SPLIT_SEED,
) -> list[list[int]]:
    """Split case indices into len(fractions) parts, stratified by class, groups kept whole.

    Within each class the units are shuffled with ``seed`` and each goes to the part that is
    furthest below its target count, largest units first, so parts hit their fractions
    closely even with multi-image groups.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    units = split_units(cases, groups)
    for category in CLASSES:
        members = [u for u in units if _unit_class(cases, u) == category]
        order = rng.permutation(len(members))
        members = [members[i] for i in order]
        members.sort(key=len, reverse=True)  # stable: shuffled order kept among equal sizes
        total = sum(len(u) for u in members)
        taken = [0] * len(fractions)
        for unit in members:
            deficits = [f * total - t for f, t in zip(fractions, taken)]
            target = int(np.argmax(deficits))
            parts[target].extend(unit)
            taken[target] += len(unit)
    return [sorted(p) for p in parts]


@dataclass
class PreparedData:
    """Preprocessed BUSI arrays on the network grid (uint8 images, uint8 0..255 soft masks)."""

    images: np.ndarray  # (N, S, S) uint8, 0..255 grey after pad + resize
    masks: np.ndarray  # (N, S, S) uint8, mask fraction * 255
    labels: np.ndarray  # (N,) int8: 0 benign, 1 malignant, -1 normal
    keys: list[str]


def data_fingerprint(cases: list[BusiCase]) -> str:
    """SHA-256 over every image and mask file of the data set (recorded in the model card)."""
    digest = hashlib.sha256()
    for case in cases:
        for path in (case.image_path, *case.mask_paths):
            digest.update(path.name.encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def prepare(cases: list[BusiCase], size: int = IMAGE_SIZE) -> PreparedData:
    """Run the shared preprocessing once over the data set."""
    images = np.zeros((len(cases), size, size), dtype=np.uint8)
    masks = np.zeros_like(images)
    for i, case in enumerate(cases):
        frame = load_image(case)
        squared, geometry = square_image(frame, size)
        images[i] = np.rint(squared).astype(np.uint8)
        mask = load_mask(case, frame.shape[:2])
        masks[i] = np.rint(np.clip(square_mask(mask, geometry), 0, 1) * 255).astype(np.uint8)
    labels = np.array([case.label for case in cases], dtype=np.int8)
    return PreparedData(images, masks, labels, [case.key for case in cases])


def prepare_cached(cases: list[BusiCase], cache_dir: Path, size: int = IMAGE_SIZE) -> PreparedData:
    """``prepare`` with an on-disk cache keyed by the data fingerprint, size and cache version."""
    key = hashlib.sha256(f"{data_fingerprint(cases)}:{size}:{CACHE_VERSION}".encode()).hexdigest()
    path = Path(cache_dir) / f"busi-{size}-{key[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            return PreparedData(data["images"], data["masks"], data["labels"], list(data["keys"]))
    prepared = prepare(cases, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temporary file per process: experiments run side by side may fill the same cache.
    temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        temporary, images=prepared.images, masks=prepared.masks, labels=prepared.labels, keys=np.array(prepared.keys)
    )
    temporary.replace(path)
    return prepared
